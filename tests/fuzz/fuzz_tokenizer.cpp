// Fuzz target: the tokenizer of the default model on arbitrary input. The first byte picks what the rest
// is: text to encode (special-token text parsed or not), or token ids (4 bytes each, any value) to decode
// in one go and incrementally. Encoding must give ids inside the vocabulary whose decoding is the text
// (for valid UTF-8 without special-token text: byte-level BPE is lossless) less the bytes the vocabulary
// has no token for (SmolLM2 lacks 21, e.g. 0x04: they are dropped, as llama.cpp and Hugging Face drop
// them); decoding an id outside the vocabulary must be refused with an exception, not read out of bounds.
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "fuzz_model.hpp"
#include "inflight/detokenizer.hpp"

using namespace inflight;

namespace {

bool valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (len == 0 || i + len > s.size()) return false;
    uint32_t cp = len == 1 ? c : c & (0x7F >> len);
    for (size_t k = 1; k < len; ++k) {
      const auto d = static_cast<unsigned char>(s[i + k]);
      if ((d >> 6) != 2) return false;
      cp = (cp << 6) | (d & 0x3F);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF))
      return false;
    i += len;
  }
  return true;
}

// The text as the vocabulary can spell it: without the bytes that have no token of their own.
std::string spellable(std::string_view text, const tokenizer& tok) {
  static const std::array<bool, 256> has_token = [&] {
    std::array<bool, 256> has{};
    for (int32_t id = 0; id < tok.vocab_size(); ++id) {
      const std::string bytes = tok.token_to_bytes(id);
      if (bytes.size() == 1) has[static_cast<unsigned char>(bytes[0])] = true;
    }
    return has;
  }();
  std::string out;
  for (const char c : text)
    if (has_token[static_cast<unsigned char>(c)]) out += c;
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const tokenizer& tok = *fuzz::default_tokenizer();
  const uint8_t mode = data[0] % 3;
  const std::string_view rest(reinterpret_cast<const char*>(data + 1), size - 1);
  if (mode < 2) {
    const bool parse_special = mode == 1;
    const std::vector<int32_t> ids = tok.encode(rest, parse_special);
    for (const int32_t id : ids)
      if (id < 0 || id >= tok.vocab_size()) std::abort();
    if (!parse_special && valid_utf8(rest) && tok.decode(ids) != spellable(rest, tok)) std::abort();
    return 0;
  }
  std::vector<int32_t> ids(rest.size() / 4);
  if (!ids.empty()) std::memcpy(ids.data(), rest.data(), ids.size() * 4);
  bool out_of_range = false;
  for (int32_t& id : ids) {
    if (id < 0 || id >= tok.vocab_size()) out_of_range = true;
  }
  try {
    (void)tok.decode(ids, data[0] & 8);
    if (out_of_range) std::abort();  // should have been refused
  } catch (const std::out_of_range&) {
    if (!out_of_range) std::abort();
  }
  incremental_detokenizer detokenizer(fuzz::default_tokenizer(), data[0] & 16);
  std::string text;
  for (const int32_t id : ids) {
    try {
      detokenizer.push(id, text);
    } catch (const std::out_of_range&) {
      if (id >= 0 && id < tok.vocab_size()) std::abort();
    }
  }
  detokenizer.flush(text);
  if (!valid_utf8(text)) std::abort();  // the detokenizer promises valid UTF-8 out, whatever the ids
  return 0;
}
