// Streaming detokenizer: never emits half a character, replaces invalid bytes only once they cannot
// complete, and always adds up to the valid-UTF-8 form of tokenizer::decode.
#include <doctest/doctest.h>

#include <filesystem>
#include <random>

#include "inflight/detokenizer.hpp"
#include "inflight/gguf.hpp"
#include "inflight/tokenizer.hpp"
#include "unicode_text.hpp"

using namespace inflight;

namespace {

const std::string fffd = "\xEF\xBF\xBD";

// Ids 0..255: one token per byte (GPT-2 characters in byte order); 256: "<|end|>" (control);
// 257: the first two bytes of U+1F600 as one token; 258: its last two bytes.
std::shared_ptr<const tokenizer> byte_tokenizer() {
  tokenizer_config config;
  config.pre = "gpt2";
  for (int b = 0; b < 256; ++b) config.tokens.push_back(unicode::byte_to_unicode_utf8(uint8_t(b)));
  config.tokens.push_back("<|end|>");
  config.tokens.push_back(unicode::byte_to_unicode_utf8(0xF0) + unicode::byte_to_unicode_utf8(0x9F));
  config.tokens.push_back(unicode::byte_to_unicode_utf8(0x98) + unicode::byte_to_unicode_utf8(0x80));
  config.kinds.assign(config.tokens.size(), token_kind::normal);
  config.kinds[256] = token_kind::control;
  return tokenizer::from_config(config);
}

std::vector<int32_t> byte_ids(std::string_view bytes) {
  std::vector<int32_t> ids;
  for (char c : bytes) ids.push_back(uint8_t(c));
  return ids;
}

// Streams `ids`, checking every chunk is valid UTF-8; returns the concatenation including flush().
std::string stream(incremental_detokenizer& detok, const std::vector<int32_t>& ids) {
  std::string all;
  for (int32_t id : ids) {
    const std::string chunk = detok.push(id);
    CHECK(unicode::is_valid_utf8(chunk));
    all += chunk;
  }
  const std::string tail = detok.flush();
  CHECK(unicode::is_valid_utf8(tail));
  return all + tail;
}

}  // namespace

TEST_CASE("multi-byte characters are held back until complete") {
  incremental_detokenizer detok(byte_tokenizer());
  CHECK(detok.push('h') == "h");
  CHECK(detok.push(0xF0).empty());
  CHECK(detok.pending_bytes() == 1);
  CHECK(detok.push(0x9F).empty());
  CHECK(detok.push(0x98).empty());
  CHECK(detok.pending_bytes() == 3);
  CHECK(detok.push(0x80) == "😀");
  CHECK(detok.pending_bytes() == 0);
  CHECK(detok.push(257).empty());  // a token ending inside the character
  CHECK(detok.push(258) == "😀");
  CHECK(detok.flush().empty());
}

TEST_CASE("text splits at every byte boundary") {
  const std::string text = "héllo wörld 😀 世界 👨‍👩‍👧 ok";
  incremental_detokenizer detok(byte_tokenizer());
  CHECK(stream(detok, byte_ids(text)) == text);
}

TEST_CASE("invalid bytes become U+FFFD only once certain") {
  incremental_detokenizer detok(byte_tokenizer());
  CHECK(detok.push(0xE2).empty());
  CHECK(detok.push(0x82).empty());
  CHECK(detok.push('a') == fffd + "a");  // E2 82 can no longer complete: one U+FFFD for both
  CHECK(detok.push(0x80) == fffd);       // a lone continuation byte is invalid at once
  CHECK(detok.push(0xC0) == fffd);       // C0 can never start a valid character
  CHECK(detok.push(0xED).empty());
  CHECK(detok.push(0xA0) == fffd + fffd);  // ED A0 would be a surrogate: two maximal subparts
  CHECK(detok.push(0xF0).empty());
  CHECK(detok.push(0x9F).empty());
  CHECK(detok.flush() == fffd);  // cut short by the end of the stream
  CHECK(detok.pending_bytes() == 0);
  CHECK(detok.flush().empty());
}

TEST_CASE("special tokens render or are skipped") {
  auto tok = byte_tokenizer();
  incremental_detokenizer keep(tok), skip(tok, true);
  CHECK(keep.push(256) == "<|end|>");
  CHECK(skip.push(256).empty());
  // A skipped special token does not interrupt a held-back character...
  CHECK(skip.push(0xC3).empty());
  CHECK(skip.push(256).empty());
  CHECK(skip.push(0xA9) == "é");
  // ...a rendered one does.
  CHECK(keep.push(0xC3).empty());
  CHECK(keep.push(256) == fffd + "<|end|>");
  CHECK_THROWS_AS(keep.push(100000), std::out_of_range);
}

TEST_CASE("push appending to a caller string") {
  incremental_detokenizer detok(byte_tokenizer());
  std::string out;
  out.reserve(64);
  const auto* data = out.data();
  for (int32_t id : byte_ids("naïve 😀")) detok.push(id, out);
  detok.flush(out);
  CHECK(out == "naïve 😀");
  CHECK(out.data() == data);  // no reallocation: nothing but the output string grows
}

TEST_CASE("random byte streams equal the sanitized decode") {
  auto tok = byte_tokenizer();
  std::mt19937 rng(1234);
  // Bytes biased towards UTF-8 structure so that valid, truncated and invalid sequences all occur.
  const std::vector<int> pool = {'a', ' ', 0x80, 0x9F, 0xA0, 0xBF, 0xC2, 0xC3, 0xE2, 0xED, 0xEF, 0xF0, 0xF4, 0xFF, 256, 257, 258};
  for (int trial = 0; trial < 2000; ++trial) {
    std::vector<int32_t> ids(size_t(rng() % 12));
    for (auto& id : ids) id = pool[rng() % pool.size()];
    incremental_detokenizer detok(tok);
    std::string streamed;
    for (int32_t id : ids) streamed += detok.push(id);
    streamed += detok.flush();
    const std::string expected = unicode::to_valid_utf8(tok->decode(ids));
    if (streamed != expected) {
      FAIL_CHECK("trial " << trial << " differs");
      break;
    }
  }
}

TEST_CASE("smollm2 stream reproduces the text") {
  if (!std::filesystem::exists(INFLIGHT_DEFAULT_MODEL)) FAIL("default model missing: " << INFLIGHT_DEFAULT_MODEL);
  auto tok = tokenizer::from_gguf(*gguf::gguf_file::open(INFLIGHT_DEFAULT_MODEL));
  const std::string text = "Emoji 👍🏽 and 🇯🇵, CJK 東京タワー, Hindi नमस्ते, Thai สวัสดี, math ∑∫√.";
  incremental_detokenizer detok(tok);
  CHECK(stream(detok, tok->encode(text)) == text);

  // Random ids from the whole vocabulary: chunks stay valid and add up to the sanitized decode.
  std::mt19937 rng(99);
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<int32_t> ids(16);
    for (auto& id : ids) id = int32_t(rng() % uint32_t(tok->vocab_size()));
    incremental_detokenizer d(tok, true);
    CHECK(stream(d, ids) == unicode::to_valid_utf8(tok->decode(ids, true)));
  }
}
