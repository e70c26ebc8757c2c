#include "unicode_text.hpp"

namespace inflight::unicode {
namespace {

bool is_continuation(uint8_t b) { return (b & 0xC0) == 0x80; }

struct byte_table {
  std::array<char32_t, 256> to_cpt{};
  std::array<std::string, 256> to_utf8{};
  std::array<int16_t, 512> from_cpt{};  // every table code point is below U+0200

  byte_table() {
    from_cpt.fill(-1);
    auto printable = [](int b) { return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE); };
    char32_t next_extra = 0x100;
    for (int b = 0; b < 256; ++b) {
      to_cpt[size_t(b)] = printable(b) ? char32_t(b) : next_extra++;
      to_utf8[size_t(b)] = encode_utf8(to_cpt[size_t(b)]);
      from_cpt[to_cpt[size_t(b)]] = int16_t(b);
    }
  }
};

const byte_table& table() {
  static const byte_table instance;
  return instance;
}

}  // namespace

decoded_cpt decode_utf8(std::string_view s, size_t offset) {
  const auto* p = reinterpret_cast<const uint8_t*>(s.data()) + offset;
  const size_t avail = s.size() - offset;
  const uint8_t b0 = p[0];
  if (b0 < 0x80) return {b0, 1, true, false};

  // Lead byte -> sequence length and the allowed range of the second byte (which is what excludes
  // overlongs, surrogates and values past U+10FFFF).
  uint32_t need = 0;
  uint8_t lo = 0x80, hi = 0xBF;
  char32_t cpt = 0;
  if (b0 >= 0xC2 && b0 <= 0xDF) { need = 2; cpt = b0 & 0x1F; }
  else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 3; cpt = b0 & 0x0F;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 4; cpt = b0 & 0x07;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    return {replacement_character, 1, false, false};
  }

  for (uint32_t i = 1; i < need; ++i) {
    if (i >= avail) return {replacement_character, i, false, true};
    const uint8_t b = p[i];
    const bool ok = i == 1 ? (b >= lo && b <= hi) : is_continuation(b);
    if (!ok) return {replacement_character, i, false, false};
    cpt = (cpt << 6) | (b & 0x3F);
  }
  return {cpt, need, true, false};
}

void append_utf8(std::string& out, char32_t cpt) {
  if (cpt > 0x10FFFF) cpt = replacement_character;
  if (cpt < 0x80) {
    out.push_back(char(cpt));
  } else if (cpt < 0x800) {
    out.push_back(char(0xC0 | (cpt >> 6)));
    out.push_back(char(0x80 | (cpt & 0x3F)));
  } else if (cpt < 0x10000) {
    out.push_back(char(0xE0 | (cpt >> 12)));
    out.push_back(char(0x80 | ((cpt >> 6) & 0x3F)));
    out.push_back(char(0x80 | (cpt & 0x3F)));
  } else {
    out.push_back(char(0xF0 | (cpt >> 18)));
    out.push_back(char(0x80 | ((cpt >> 12) & 0x3F)));
    out.push_back(char(0x80 | ((cpt >> 6) & 0x3F)));
    out.push_back(char(0x80 | (cpt & 0x3F)));
  }
}

std::string encode_utf8(char32_t cpt) {
  std::string out;
  append_utf8(out, cpt);
  return out;
}

bool is_valid_utf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const auto d = decode_utf8(s, i);
    if (!d.valid) return false;
    i += d.length;
  }
  return true;
}

std::string to_valid_utf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const auto d = decode_utf8(s, i);
    if (d.valid) out.append(s.substr(i, d.length));
    else append_utf8(out, replacement_character);
    i += d.length;
  }
  return out;
}

size_t incomplete_utf8_suffix(std::string_view s) {
  // A truncated sequence is at most 3 bytes long, so only the last 3 bytes can start one.
  const size_t first = s.size() > 3 ? s.size() - 3 : 0;
  for (size_t start = first; start < s.size(); ++start) {
    const auto b = uint8_t(s[start]);
    if (is_continuation(b)) continue;
    const auto d = decode_utf8(s, start);
    return (!d.valid && d.truncated && start + d.length == s.size()) ? s.size() - start : 0;
  }
  return 0;
}

std::string llama_sanitize_utf8(std::string_view s) {
  // Mirrors llama.cpp unicode_cpt_from_utf8: only the bit patterns are checked.
  std::string out;
  out.reserve(s.size());
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  const size_t n = s.size();
  for (size_t i = 0; i < n;) {
    const uint8_t b0 = p[i];
    uint32_t need = 0;
    if (!(b0 & 0x80)) need = 1;
    else if (!(b0 & 0x40)) need = 0;
    else if (!(b0 & 0x20)) need = 2;
    else if (!(b0 & 0x10)) need = 3;
    else if (!(b0 & 0x08)) need = 4;
    bool ok = need > 0 && i + need <= n;
    for (uint32_t k = 1; ok && k < need; ++k) ok = is_continuation(p[i + k]);
    if (!ok) {
      append_utf8(out, replacement_character);
      ++i;
      continue;
    }
    if (need == 1) {
      out.push_back(char(b0));
      ++i;
      continue;
    }
    char32_t cpt = b0 & (0x7F >> need);
    for (uint32_t k = 1; k < need; ++k) cpt = (cpt << 6) | (p[i + k] & 0x3F);
    append_utf8(out, cpt);
    i += need;
  }
  return out;
}

char32_t byte_to_unicode(uint8_t byte) { return table().to_cpt[byte]; }

const std::string& byte_to_unicode_utf8(uint8_t byte) { return table().to_utf8[byte]; }

int unicode_to_byte(char32_t cpt) { return cpt < 512 ? table().from_cpt[cpt] : -1; }

}  // namespace inflight::unicode
