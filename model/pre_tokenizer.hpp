// Pre-tokenizers of byte-level BPE vocabularies, selected by the GGUF key tokenizer.ggml.pre.
//
// A pre-tokenizer is llama.cpp's list of regexes (src/llama-vocab.cpp, llm_tokenizer_bpe), applied in
// sequence: each regex splits every piece produced by the previous one, and both the matches and the
// unmatched text between them become pieces. A piece never sees its neighbours, so a lookahead such as
// (?!\S) stops at the piece's end. BPE then runs on each final piece separately.
//
// The regexes run on PCRE2 with UTF + UCP (JIT-compiled when available). Where llama.cpp replaces a regex
// by hand-written code (unicode.cpp: the GPT-2 and Llama-3 patterns), the regex semantics give the same
// pieces as that code for every assigned code point; two details are pinned to llama.cpp rather than to
// PCRE2: `\s` means the Unicode White_Space property (which includes U+0085, unlike PCRE2's \s), and the
// case-insensitive contractions are spelled '[sS] etc. (so U+017F 'ſ' does not count as 's').
// Known remaining difference: code points unassigned in the Unicode version PCRE2 was built with (e.g.
// Unicode 15+ additions under PCRE2 10.42) are neither letters nor numbers here; llama.cpp's tables may be
// newer. New emoji are symbols in both, so they agree.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace inflight {

class pre_tokenizer {
 public:
  // Throws std::invalid_argument naming `name` and the supported names when `name` is unknown.
  static std::unique_ptr<pre_tokenizer> create(std::string_view name);
  // Every accepted tokenizer.ggml.pre value, for messages and tests.
  static std::vector<std::string> supported_names();

  ~pre_tokenizer();
  pre_tokenizer(const pre_tokenizer&) = delete;
  pre_tokenizer& operator=(const pre_tokenizer&) = delete;

  const std::string& name() const { return name_; }
  // llama.cpp's ignore_merges (Llama-3 family): a piece that is itself a vocabulary entry is emitted
  // whole, without running BPE merges.
  bool ignore_merges() const { return ignore_merges_; }

  // Appends to `pieces` consecutive views into `text` that together cover it exactly (nothing for "").
  // `text` must be valid UTF-8 except that encoded surrogates (ED A0..BF xx) are allowed, which is what
  // unicode::llama_sanitize_utf8 produces; anything else throws std::invalid_argument.
  // Thread-safe: a pre_tokenizer is immutable after create().
  void split(std::string_view text, std::vector<std::string_view>& pieces) const;
  std::vector<std::string> split(std::string_view text) const;

 private:
  class compiled_regex;
  pre_tokenizer(std::string name, bool ignore_merges, const std::vector<std::string_view>& patterns);

  std::string name_;
  bool ignore_merges_ = false;
  std::vector<std::unique_ptr<compiled_regex>> regexes_;
};

}  // namespace inflight
