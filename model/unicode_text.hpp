// UTF-8 helpers shared by the tokenizer, pre-tokenizer and detokenizer, and GPT-2's byte <-> unicode table.
//
// Two decoders on purpose: `decode_utf8` is strict (RFC 3629: no overlongs, no surrogates, nothing past
// U+10FFFF) and is what validity checks and the streaming detokenizer use; `llama_sanitize_utf8` mirrors
// llama.cpp's lenient decoder so that token ids match it even on malformed input.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace inflight::unicode {

inline constexpr char32_t replacement_character = 0xFFFD;

struct decoded_cpt {
  char32_t cpt = 0;
  // Bytes consumed. For an invalid sequence: the length of its maximal subpart (at least 1), i.e. the
  // bytes one U+FFFD stands for (Unicode 15, section 3.9, "U+FFFD substitution of maximal subparts").
  uint32_t length = 0;
  bool valid = false;
  // Only for invalid results: the bytes are a valid prefix that ran into the end of the input, so more
  // bytes could still complete it (the streaming detokenizer holds these back).
  bool truncated = false;
};

// Strictly decodes the code point starting at `offset` (< s.size()).
decoded_cpt decode_utf8(std::string_view s, size_t offset);

// Appends the UTF-8 encoding of `cpt` (U+FFFD for values past U+10FFFF; surrogates are encoded as-is).
void append_utf8(std::string& out, char32_t cpt);
std::string encode_utf8(char32_t cpt);

bool is_valid_utf8(std::string_view s);

// Replaces every invalid maximal subpart by U+FFFD (strict decoder).
std::string to_valid_utf8(std::string_view s);

// Number of trailing bytes of `s` that form a valid but incomplete UTF-8 prefix (0..3): bytes a
// streaming consumer must hold back because the next chunk may complete them.
size_t incomplete_utf8_suffix(std::string_view s);

// llama.cpp's unicode_cpts_from_utf8 + unicode_cpt_to_utf8 round trip: a lead byte followed by the
// right number of continuation bytes is accepted whatever it encodes (overlongs are re-encoded in
// canonical form, surrogates pass through), any other byte becomes U+FFFD. The pre-tokenizer and BPE then
// see exactly the bytes llama.cpp sees.
std::string llama_sanitize_utf8(std::string_view s);

// GPT-2's bytes_to_unicode: printable Latin-1 bytes ('!'..'~', '¡'..'¬', '®'..'ÿ') map to themselves,
// the other 68 bytes to U+0100.. in byte order (so ' ' -> 'Ġ' U+0120, '\n' -> 'Ċ' U+010A).
char32_t byte_to_unicode(uint8_t byte);
// UTF-8 text of byte_to_unicode(byte), precomputed.
const std::string& byte_to_unicode_utf8(uint8_t byte);
// Inverse: the byte for a code point of the table, or -1 when `cpt` is not in it.
int unicode_to_byte(char32_t cpt);

}  // namespace inflight::unicode
