// Structured output: decoding constrained to a formal language. A request may ask that its output be a
// JSON value (json_object), JSON that validates against a JSON Schema (json_schema), a string of a GBNF
// grammar (llama.cpp's syntax) or a match of a regular expression. Before each of a constrained sequence's
// samples, its matcher writes the tokens that may come next into a bitmask over the vocabulary; the
// sampler draws among those only (apply_token_mask), and the drawn token advances the matcher. Once the
// output is complete, only end-of-generation tokens are allowed, so the sequence stops there.
//
// The grammar engine is xgrammar (built from its source release: tools/fetch_xgrammar.sh), as in vLLM and
// SGLang: it precomputes, per grammar state, which tokens of the vocabulary are always or never allowed,
// so a step's mask costs microseconds for most states. This header includes none of it.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

namespace inflight {

class tokenizer;

struct output_constraint {
  enum class kind : uint8_t { none, json_object, json_schema, grammar, regex };
  kind type = kind::none;
  std::string text;  // the schema (JSON text), the GBNF grammar (its root rule is `root`) or the regex
  bool active() const { return type != kind::none; }
  bool operator==(const output_constraint&) const = default;
};
const char* to_string(output_constraint::kind kind);

class compiled_constraint;  // immutable once compiled; shared by every sequence that uses it

// Compiles constraints against one vocabulary. Thread-safe; a constraint compiled before is found in a
// cache (bounded in memory, least recently used out first) instead of being compiled anew.
class constraint_compiler {
 public:
  // `vocab_size`: the width of the logits rows, at least the tokenizer's vocabulary (ids beyond it are
  // never allowed). Control and other special tokens are never allowed either, but for the tokenizer's
  // end-of-generation tokens, which are allowed exactly where the output may end.
  constraint_compiler(const tokenizer& tok, int32_t vocab_size);
  ~constraint_compiler();
  constraint_compiler(const constraint_compiler&) = delete;
  constraint_compiler& operator=(const constraint_compiler&) = delete;

  // Throws std::invalid_argument with a message for the client: a schema that is not JSON or uses what the
  // engine cannot enforce, a grammar or regex that does not parse.
  std::shared_ptr<const compiled_constraint> compile(const output_constraint& constraint) const;

  int32_t vocab_size() const;
  // 32-bit words in one row of a token mask: ceil(vocab_size / 32).
  int32_t mask_words() const;

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

// One sequence's place in its constraint. Not thread-safe (one sequence, one thread at a time).
class constraint_matcher {
 public:
  explicit constraint_matcher(std::shared_ptr<const compiled_constraint> constraint);
  ~constraint_matcher();
  constraint_matcher(constraint_matcher&&) noexcept;
  constraint_matcher& operator=(constraint_matcher&&) noexcept;

  // Writes the tokens allowed next into `mask` (mask_words() words: token t is bit t % 32 of word t / 32).
  // Returns false when every token is allowed (the mask need not be applied).
  bool fill_next_token_mask(std::span<uint32_t> mask);
  // Advances past `token`. Returns false, changing nothing, when the constraint does not allow it.
  bool accept(int32_t token);
  // The output so far is a complete match (an end-of-generation token may follow).
  bool can_end() const;
  // An end-of-generation token was accepted: nothing more may follow.
  bool is_terminated() const;

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

// logits[t] = -infinity for every token t whose bit in `mask` is clear. `mask` holds at least
// ceil(logits.size() / 32) words.
void apply_token_mask(std::span<float> logits, std::span<const uint32_t> mask);

}  // namespace inflight
