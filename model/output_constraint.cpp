// The one translation unit that includes xgrammar (see include/inflight/output_constraint.hpp).
#include "inflight/output_constraint.hpp"

#include <dlpack/dlpack.h>
#include <xgrammar/xgrammar.h>

#include <cmath>
#include <limits>
#include <stdexcept>
#include <utility>
#include <vector>

#include "inflight/tokenizer.hpp"

namespace inflight {

const char* to_string(output_constraint::kind kind) {
  switch (kind) {
    case output_constraint::kind::none: return "none";
    case output_constraint::kind::json_object: return "json_object";
    case output_constraint::kind::json_schema: return "json_schema";
    case output_constraint::kind::grammar: return "grammar";
    case output_constraint::kind::regex: return "regex";
  }
  return "?";
}

class compiled_constraint {
 public:
  compiled_constraint(xgrammar::CompiledGrammar grammar, int32_t mask_words)
      : grammar_(std::move(grammar)), mask_words_(mask_words) {}
  const xgrammar::CompiledGrammar& grammar() const { return grammar_; }
  int32_t mask_words() const { return mask_words_; }

 private:
  xgrammar::CompiledGrammar grammar_;
  int32_t mask_words_;
};

namespace {

// The vocabulary as xgrammar reads it: each token's raw bytes (RAW: no byte-level or SentencePiece
// decoding left to do, so any of our tokenizers fits). Special tokens are "", which nothing matches, so
// they are never allowed; the end-of-generation tokens are listed as the stop tokens, allowed exactly
// where the output may end.
xgrammar::TokenizerInfo make_tokenizer_info(const tokenizer& tok, int32_t vocab_size) {
  if (vocab_size < tok.vocab_size())
    throw std::invalid_argument("constraint_compiler: vocab_size " + std::to_string(vocab_size) +
                                " is smaller than the tokenizer's " + std::to_string(tok.vocab_size()));
  std::vector<std::string> vocab(size_t(tok.vocab_size()));
  for (int32_t id = 0; id < tok.vocab_size(); ++id) {
    if (!tok.is_special(id) && !tok.is_end_of_generation(id)) vocab[size_t(id)] = tok.token_bytes(id);
  }
  std::vector<int32_t> stop_ids = tok.end_of_generation_ids();
  if (stop_ids.empty()) throw std::invalid_argument("constraint_compiler: the tokenizer has no end-of-generation token");
  return xgrammar::TokenizerInfo(vocab, xgrammar::VocabType::RAW, vocab_size, stop_ids, false);
}

// A JSON object with any members: OpenAI's json_object. (xgrammar's built-in JSON grammar takes arrays too.)
constexpr const char* any_object_schema = R"({"type": "object"})";

// xgrammar's messages start with a timestamp and its source position ("[03:50:38] /path/grammar_parser.cc:820:
// EBNF parser error at ..."): the client gets the part after them.
std::string client_message(std::string message) {
  if (!message.empty() && message.front() == '[') {
    const size_t source = message.find(".cc:");
    const size_t after = source == std::string::npos ? std::string::npos : message.find(": ", source + 4);
    if (after != std::string::npos) message.erase(0, after + 2);
  }
  while (!message.empty() && (message.back() == '\n' || message.back() == ' ')) message.pop_back();
  return message;
}

}  // namespace

struct constraint_compiler::impl {
  impl(const tokenizer& tok, int32_t vocab_size)
      : vocab_size(vocab_size),
        mask_words(xgrammar::GetBitmaskSize(vocab_size)),
        // One thread: a compile runs on the caller's thread (a request actor's), never on the executor's.
        // The cache of compiled grammars is bounded: clients choose the schemas, so a client sending a new
        // one each time must not grow the server's memory without end (the least recently used go first).
        compiler(make_tokenizer_info(tok, vocab_size), 1, true, cache_limit_bytes) {}

  xgrammar::CompiledGrammar compile(const output_constraint& c) {
    // The JSON is generated without free whitespace (", " and ": " between items): xgrammar's default of
    // any whitespace lets a small model pad its output with blanks until max_tokens runs out.
    switch (c.type) {
      case output_constraint::kind::json_object: return compiler.CompileJSONSchema(any_object_schema, false, std::nullopt, std::nullopt, false);
      case output_constraint::kind::json_schema: return compiler.CompileJSONSchema(c.text, false, std::nullopt, std::nullopt, true);
      case output_constraint::kind::grammar: return compiler.CompileGrammar(c.text, "root");
      case output_constraint::kind::regex: return compiler.CompileRegex(c.text);
      case output_constraint::kind::none: break;
    }
    throw std::invalid_argument("no constraint to compile");
  }

  static constexpr int64_t cache_limit_bytes = 256 << 20;
  int32_t vocab_size;
  int32_t mask_words;
  xgrammar::GrammarCompiler compiler;  // thread-safe; finds a grammar compiled before in its cache
};

constraint_compiler::constraint_compiler(const tokenizer& tok, int32_t vocab_size)
    : impl_(std::make_unique<impl>(tok, vocab_size)) {}

constraint_compiler::~constraint_compiler() = default;

std::shared_ptr<const compiled_constraint> constraint_compiler::compile(const output_constraint& constraint) const {
  if (!constraint.active()) throw std::invalid_argument("no constraint to compile");
  try {
    return std::make_shared<const compiled_constraint>(impl_->compile(constraint), impl_->mask_words);
  } catch (const std::exception& error) {
    throw std::invalid_argument(std::string("invalid ") + to_string(constraint.type) + ": " + client_message(error.what()));
  }
}

int32_t constraint_compiler::vocab_size() const { return impl_->vocab_size; }
int32_t constraint_compiler::mask_words() const { return impl_->mask_words; }

struct constraint_matcher::impl {
  explicit impl(std::shared_ptr<const compiled_constraint> c)
      : constraint(std::move(c)), matcher(constraint->grammar()) {}
  std::shared_ptr<const compiled_constraint> constraint;  // keeps the grammar alive for the matcher
  xgrammar::GrammarMatcher matcher;
};

constraint_matcher::constraint_matcher(std::shared_ptr<const compiled_constraint> constraint)
    : impl_(std::make_unique<impl>(std::move(constraint))) {}
constraint_matcher::~constraint_matcher() = default;
constraint_matcher::constraint_matcher(constraint_matcher&&) noexcept = default;
constraint_matcher& constraint_matcher::operator=(constraint_matcher&&) noexcept = default;

bool constraint_matcher::fill_next_token_mask(std::span<uint32_t> mask) {
  const int32_t words = impl_->constraint->mask_words();
  if (mask.size() < size_t(words)) throw std::invalid_argument("fill_next_token_mask: the mask is too small");
  int64_t shape[1] = {words};
  DLTensor tensor{mask.data(), DLDevice{kDLCPU, 0}, 1, xgrammar::GetBitmaskDLType(), shape, nullptr, 0};
  return impl_->matcher.FillNextTokenBitmask(&tensor);
}

bool constraint_matcher::accept(int32_t token) { return impl_->matcher.AcceptToken(token); }
bool constraint_matcher::can_end() const { return impl_->matcher.IsCompleted(); }
bool constraint_matcher::is_terminated() const { return impl_->matcher.IsTerminated(); }

void apply_token_mask(std::span<float> logits, std::span<const uint32_t> mask) {
  const size_t words = (logits.size() + 31) / 32;
  if (mask.size() < words) throw std::invalid_argument("apply_token_mask: the mask is too small");
  constexpr float blocked = -std::numeric_limits<float>::infinity();
  for (size_t word = 0; word < words; ++word) {
    const uint32_t bits = mask[word];
    if (bits == 0xFFFFFFFFu) continue;  // the common case in a mostly open mask
    const size_t first = word * 32, end = std::min(first + 32, logits.size());
    for (size_t t = first; t < end; ++t) {
      if (!((bits >> (t - first)) & 1u)) logits[t] = blocked;
    }
  }
}

}  // namespace inflight
