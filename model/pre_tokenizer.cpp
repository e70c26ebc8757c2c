#include "pre_tokenizer.hpp"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <stdexcept>
#include <utility>

#include "unicode_text.hpp"

namespace inflight {
namespace {

// llama.cpp's regex lists, verbatim (src/llama-vocab.cpp). `\s`/`\S` are rewritten by expand_whitespace().
constexpr std::string_view gpt2_pattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)";
constexpr std::string_view llama3_pattern =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}|"
    " ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

struct family {
  std::vector<std::string_view> names;
  std::vector<std::string_view> patterns;
  bool ignore_merges;
};

const std::vector<family>& families() {
  static const std::vector<family> all = {
      // StarCoder-style: every digit its own piece, then GPT-2's pattern. SmolLM/SmolLM2 use this.
      {{"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b"},
       {"\\p{N}", gpt2_pattern},
       false},
      {{"gpt-2", "gpt2", "mpt", "olmo", "jais", "phi-2", "trillion"}, {gpt2_pattern}, false},
      {{"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2"},
       {llama3_pattern},
       true},
      // llama.cpp's fallback list for BPE vocabularies ("default", or no tokenizer.ggml.pre at all).
      {{"default"},
       {"[\\p{P}\\$\\+<=>\\^~\\|]+", gpt2_pattern, "\\p{N}+", "[0-9][0-9][0-9]"},
       false},
  };
  return all;
}

// The Unicode White_Space property, which is what llama.cpp's unicode_set_whitespace holds. PCRE2's
// UCP \s is "Z or \t\n\v\f\r" and misses U+0085, so the patterns spell the set out.
constexpr std::string_view white_space =
    "\\t\\n\\x{0B}\\f\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}";

std::string expand_whitespace(std::string_view pattern) {
  std::string out;
  bool in_class = false;
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const char next = pattern[i + 1];
      ++i;
      if (next == 's') {
        if (in_class) out.append(white_space);
        else out.append("[").append(white_space).append("]");
      } else if (next == 'S' && !in_class) {
        out.append("[^").append(white_space).append("]");
      } else if (next == 'S') {
        throw std::logic_error("pre_tokenizer: \\S inside a character class is not supported");
      } else {
        out.push_back(c);
        out.push_back(next);
      }
      continue;
    }
    if (c == '[' && !in_class) in_class = true;
    else if (c == ']' && in_class) in_class = false;
    out.push_back(c);
  }
  return out;
}

}  // namespace

class pre_tokenizer::compiled_regex {
 public:
  explicit compiled_regex(std::string_view llama_pattern) : source_(expand_whitespace(llama_pattern)) {
    int error_code = 0;
    PCRE2_SIZE error_offset = 0;
    code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(source_.data()), source_.size(),
                          PCRE2_UTF | PCRE2_UCP, &error_code, &error_offset, nullptr);
    if (code_ == nullptr) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(error_code, message, sizeof(message));
      throw std::logic_error("pre_tokenizer: cannot compile /" + source_ + "/ at " + std::to_string(error_offset) +
                             ": " + reinterpret_cast<const char*>(message));
    }
    // JIT is an optimisation only: without it (or on a platform lacking it) the interpreter runs.
    jit_ = pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE) == 0;
  }
  ~compiled_regex() { pcre2_code_free(code_); }
  compiled_regex(const compiled_regex&) = delete;
  compiled_regex& operator=(const compiled_regex&) = delete;

  // First match in subject[start..]: true and [begin, end) set, or false.
  bool find(std::string_view subject, size_t start, pcre2_match_data* match_data, size_t& begin,
            size_t& end) const {
    // The subject was validated once by split(); checking it again on every call would be quadratic.
    int rc = pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(subject.data()), subject.size(), start,
                         PCRE2_NO_UTF_CHECK, match_data, nullptr);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
      rc = pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(subject.data()), subject.size(), start,
                       PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, match_data, nullptr);
    }
    if (rc == PCRE2_ERROR_NOMATCH) return false;
    if (rc < 0) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(rc, message, sizeof(message));
      throw std::runtime_error(std::string("pre_tokenizer: regex match failed: ") +
                               reinterpret_cast<const char*>(message));
    }
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(match_data);
    begin = ovector[0];
    end = ovector[1];
    return true;
  }

 private:
  std::string source_;
  pcre2_code* code_ = nullptr;
  bool jit_ = false;
};

pre_tokenizer::pre_tokenizer(std::string name, bool ignore_merges, const std::vector<std::string_view>& patterns)
    : name_(std::move(name)), ignore_merges_(ignore_merges) {
  for (auto pattern : patterns) regexes_.push_back(std::make_unique<compiled_regex>(pattern));
}

pre_tokenizer::~pre_tokenizer() = default;

std::unique_ptr<pre_tokenizer> pre_tokenizer::create(std::string_view name) {
  for (const auto& f : families()) {
    for (auto n : f.names) {
      if (n == name) return std::unique_ptr<pre_tokenizer>(new pre_tokenizer(std::string(name), f.ignore_merges, f.patterns));
    }
  }
  std::string supported;
  for (const auto& n : supported_names()) {
    if (!supported.empty()) supported += ", ";
    supported += n;
  }
  throw std::invalid_argument("unsupported pre-tokenizer '" + std::string(name) + "' (supported: " + supported + ")");
}

std::vector<std::string> pre_tokenizer::supported_names() {
  std::vector<std::string> names;
  for (const auto& f : families()) {
    for (auto n : f.names) names.emplace_back(n);
  }
  return names;
}

void pre_tokenizer::split(std::string_view text, std::vector<std::string_view>& pieces) const {
  if (text.empty()) return;

  // PCRE2 rejects surrogates, which llama.cpp lets through from malformed input. U+FFFD has the same
  // byte length and the same role in every pattern here (neither letter, number nor space), so matching
  // on a patched copy yields the same offsets.
  std::string_view subject = text;
  std::string patched;
  for (size_t i = 0; i + 1 < text.size(); ++i) {
    if (uint8_t(text[i]) == 0xED && uint8_t(text[i + 1]) >= 0xA0) {
      if (patched.empty()) patched.assign(text);
      if (i + 2 < text.size()) patched.replace(i, 3, "\xEF\xBF\xBD");
    }
  }
  if (!patched.empty()) subject = patched;
  if (!unicode::is_valid_utf8(subject)) {
    throw std::invalid_argument("pre_tokenizer::split: text is not valid UTF-8 (sanitize it first)");
  }

  std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> match_data(
      pcre2_match_data_create(1, nullptr), &pcre2_match_data_free);
  if (!match_data) throw std::bad_alloc();

  // Pieces as [begin, end) byte ranges of `text`; each regex refines the previous list.
  std::vector<std::pair<size_t, size_t>> current{{0, text.size()}}, next;
  for (const auto& regex : regexes_) {
    next.clear();
    for (const auto& [piece_begin, piece_end] : current) {
      // The subject handed to PCRE2 is the piece alone, so lookarounds cannot see past it.
      const std::string_view piece = subject.substr(piece_begin, piece_end - piece_begin);
      size_t unmatched_from = 0, search_from = 0, match_begin = 0, match_end = 0;
      while (search_from < piece.size() &&
             regex->find(piece, search_from, match_data.get(), match_begin, match_end)) {
        if (match_end == match_begin) {  // no pattern here matches empty; guard against a loop anyway
          search_from = match_begin + unicode::decode_utf8(piece, match_begin).length;
          continue;
        }
        if (match_begin > unmatched_from) next.emplace_back(piece_begin + unmatched_from, piece_begin + match_begin);
        next.emplace_back(piece_begin + match_begin, piece_begin + match_end);
        unmatched_from = search_from = match_end;
      }
      if (unmatched_from < piece.size()) next.emplace_back(piece_begin + unmatched_from, piece_end);
    }
    current.swap(next);
  }
  for (const auto& [b, e] : current) pieces.push_back(text.substr(b, e - b));
}

std::vector<std::string> pre_tokenizer::split(std::string_view text) const {
  std::vector<std::string_view> views;
  split(text, views);
  return {views.begin(), views.end()};
}

}  // namespace inflight
