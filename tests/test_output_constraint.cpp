// Structured output's grammar layer (model/output_constraint.cpp) on SmolLM2's real vocabulary: what the
// masks allow is walked at random, token by token, and every finished walk is checked by an independent
// reader (simdjson for JSON, std::regex for regexes); what the masks forbid is refused by accept().
#include <doctest/doctest.h>
#include <simdjson.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <random>
#include <regex>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "inflight/detokenizer.hpp"
#include "inflight/gguf.hpp"
#include "inflight/output_constraint.hpp"
#include "inflight/tokenizer.hpp"

using namespace inflight;

namespace {

std::shared_ptr<const tokenizer> smollm2_pointer() {
  static const std::shared_ptr<const tokenizer> tok = [] {
    if (!std::filesystem::exists(INFLIGHT_DEFAULT_MODEL)) return std::shared_ptr<const tokenizer>();
    return tokenizer::from_gguf(*gguf::gguf_file::open(INFLIGHT_DEFAULT_MODEL));
  }();
  if (!tok) FAIL("default model missing: " << INFLIGHT_DEFAULT_MODEL << " (run tools/setup.sh to fetch it)");
  return tok;
}
const tokenizer& smollm2() { return *smollm2_pointer(); }

// The logits of SmolLM2-135M are 49152 wide, its vocabulary too; a wider row must work as well.
const constraint_compiler& compiler() {
  static const constraint_compiler instance(smollm2(), smollm2().vocab_size());
  return instance;
}

bool allowed(const std::vector<uint32_t>& mask, int32_t token) { return (mask[size_t(token) / 32] >> (token % 32)) & 1u; }

std::vector<int32_t> allowed_tokens(const std::vector<uint32_t>& mask, int32_t vocab_size) {
  std::vector<int32_t> tokens;
  for (int32_t t = 0; t < vocab_size; ++t)
    if (allowed(mask, t)) tokens.push_back(t);
  return tokens;
}

struct walk {
  std::string text;  // as the server sends it: invalid UTF-8 across tokens becomes U+FFFD (detokenizer.hpp)
  bool ended = false;  // an end-of-generation token was drawn
  int32_t steps = 0;
};

// Draws tokens at random among those the mask allows, until an end-of-generation token or `max_steps`.
// Once the output can end, it ends with probability `end_bias` (a real model stops too). Along the way,
// checks that a token the mask forbids is refused and that no special token is ever allowed.
walk random_walk(const output_constraint& constraint, std::mt19937& rng, int32_t max_steps = 400, double end_bias = 0.5) {
  const tokenizer& tok = smollm2();
  constraint_matcher matcher(compiler().compile(constraint));
  std::vector<uint32_t> mask(size_t(compiler().mask_words()));
  incremental_detokenizer text(smollm2_pointer());
  walk result;
  for (; result.steps < max_steps; ++result.steps) {
    const bool restricted = matcher.fill_next_token_mask(mask);
    REQUIRE(restricted);  // every constraint here restricts every step
    const std::vector<int32_t> choices = allowed_tokens(mask, tok.vocab_size());
    REQUIRE_FALSE(choices.empty());
    for (const int32_t id : choices) {
      if (tok.is_special(id) || tok.is_end_of_generation(id)) {
        REQUIRE(tok.is_end_of_generation(id));  // control tokens never; an end only where the output may end
        REQUIRE(matcher.can_end());
      }
    }
    // A forbidden token is refused and changes nothing.
    std::uniform_int_distribution<int32_t> any(0, tok.vocab_size() - 1);
    for (int tries = 0; tries < 20; ++tries) {
      const int32_t token = any(rng);
      if (!allowed(mask, token)) {
        CHECK_FALSE(matcher.accept(token));
        break;
      }
    }
    // Half the time a one-byte token (quotes, brackets, digits, commas), so that strings close and
    // structures end within a few hundred steps; else any allowed token.
    std::vector<int32_t> short_choices;
    for (const int32_t id : choices)
      if (tok.token_bytes(id).size() == 1) short_choices.push_back(id);
    const std::vector<int32_t>& pool = !short_choices.empty() && std::bernoulli_distribution(0.5)(rng) ? short_choices : choices;
    int32_t next = pool[std::uniform_int_distribution<size_t>(0, pool.size() - 1)(rng)];
    if (matcher.can_end() && std::bernoulli_distribution(end_bias)(rng)) next = tok.end_of_generation_ids().front();
    REQUIRE(matcher.accept(next));
    if (tok.is_end_of_generation(next)) {
      result.ended = true;
      CHECK(matcher.is_terminated());
      break;
    }
    text.push(next, result.text);
  }
  text.flush(result.text);
  return result;
}

}  // namespace

TEST_CASE("json_schema: random walks through the masks end in JSON that validates against the schema") {
  const std::string schema = R"({
    "type": "object",
    "properties": {
      "name": {"type": "string", "enum": ["Ada", "Grace", "Linus"]},
      "age": {"type": "integer", "minimum": 0, "maximum": 150},
      "tags": {"type": "array", "items": {"$ref": "#/$defs/tag"}, "minItems": 1, "maxItems": 3},
      "admin": {"type": "boolean"}
    },
    "required": ["name", "tags"],
    "$defs": {"tag": {"type": "string", "enum": ["x", "y", "z"]}}
  })";
  std::mt19937 rng(7);
  simdjson::dom::parser parser;
  int ended = 0;
  for (int i = 0; i < 12; ++i) {
    const walk w = random_walk({output_constraint::kind::json_schema, schema}, rng);
    if (!w.ended) continue;  // a walk may wander in a long integer until max_steps; the ended ones count
    ++ended;
    INFO("output: " << w.text);
    simdjson::dom::element root;
    REQUIRE(parser.parse(w.text).get(root) == simdjson::SUCCESS);
    simdjson::dom::object object;
    REQUIRE(root.get_object().get(object) == simdjson::SUCCESS);
    std::string_view name;
    REQUIRE(object["name"].get_string().get(name) == simdjson::SUCCESS);
    CHECK(std::set<std::string_view>{"Ada", "Grace", "Linus"}.count(name) == 1);
    simdjson::dom::array tags;
    REQUIRE(object["tags"].get_array().get(tags) == simdjson::SUCCESS);
    CHECK(tags.size() >= 1);
    CHECK(tags.size() <= 3);
    for (const auto tag : tags) {
      std::string_view value;
      REQUIRE(tag.get_string().get(value) == simdjson::SUCCESS);
      CHECK(std::set<std::string_view>{"x", "y", "z"}.count(value) == 1);
    }
    int64_t age = 0;
    if (object["age"].get_int64().get(age) == simdjson::SUCCESS) {
      CHECK(age >= 0);
      CHECK(age <= 150);
    }
    for (const auto field : object) {
      CHECK(std::set<std::string_view>{"name", "age", "tags", "admin"}.count(field.key) == 1);  // strict: no extras
    }
  }
  CHECK(ended >= 8);
}

TEST_CASE("json_object: any JSON object, and never an array or a bare value") {
  std::mt19937 rng(11);
  simdjson::dom::parser parser;
  int ended = 0;
  for (int i = 0; i < 10; ++i) {
    const walk w = random_walk({output_constraint::kind::json_object, ""}, rng, 300, 0.9);
    if (!w.ended) continue;
    ++ended;
    INFO("output: " << w.text);
    simdjson::dom::element root;
    REQUIRE(parser.parse(w.text).get(root) == simdjson::SUCCESS);
    CHECK(root.is_object());
  }
  CHECK(ended >= 5);
}

TEST_CASE("regex and GBNF grammar: every ended walk matches, and the first token is forced") {
  std::mt19937 rng(3);
  const std::regex date("[0-9]{4}-[0-9]{2}-[0-9]{2}");
  for (int i = 0; i < 8; ++i) {
    const walk w = random_walk({output_constraint::kind::regex, "[0-9]{4}-[0-9]{2}-[0-9]{2}"}, rng, 50);
    REQUIRE(w.ended);  // a fixed-length language always ends
    CHECK(std::regex_match(w.text, date));
  }
  const std::string grammar = "root ::= answer \".\"\nanswer ::= \"yes\" | \"no\" | \"maybe\"\n";
  for (int i = 0; i < 8; ++i) {
    const walk w = random_walk({output_constraint::kind::grammar, grammar}, rng, 50);
    REQUIRE(w.ended);
    CHECK(std::set<std::string>{"yes.", "no.", "maybe."}.count(w.text) == 1);
  }
}

TEST_CASE("a constraint that does not compile is refused with a message naming the problem") {
  const auto message = [](const output_constraint& c) {
    try {
      compiler().compile(c);
    } catch (const std::invalid_argument& error) {
      return std::string(error.what());
    }
    return std::string("(compiled)");
  };
  CHECK(message({output_constraint::kind::json_schema, "{not json"}).rfind("invalid json_schema: ", 0) == 0);
  const std::string grammar_error = message({output_constraint::kind::grammar, "root ::= ("});
  CHECK(grammar_error.rfind("invalid grammar: ", 0) == 0);
  CHECK(grammar_error.find(".cc:") == std::string::npos);  // xgrammar's source position is not the client's business
  CHECK(grammar_error.find("line 1") != std::string::npos);  // where in the grammar is
  CHECK(message({output_constraint::kind::grammar, "start ::= \"a\""}).rfind("invalid grammar: ", 0) == 0);  // no root
  CHECK(message({output_constraint::kind::regex, "[a-"}).rfind("invalid regex: ", 0) == 0);
  CHECK_THROWS_AS(compiler().compile({}), std::invalid_argument);
  // The same constraint twice: the second comes from the cache (and works the same).
  const output_constraint yes_no{output_constraint::kind::grammar, "root ::= \"yes\" | \"no\""};
  CHECK(compiler().compile(yes_no) != nullptr);
  CHECK(compiler().compile(yes_no) != nullptr);
}

TEST_CASE("apply_token_mask blocks exactly the clear bits, across word boundaries and a partial last word") {
  std::vector<float> logits(70);
  for (size_t i = 0; i < logits.size(); ++i) logits[i] = float(i);
  std::vector<uint32_t> mask = {0xFFFFFFFFu, 0x00000005u, 0x2u};  // all of 0..31; 32 and 34; 65
  apply_token_mask(logits, mask);
  for (size_t i = 0; i < logits.size(); ++i) {
    const bool kept = i < 32 || i == 32 || i == 34 || i == 65;
    INFO("token " << i);
    if (kept) CHECK(logits[i] == float(i));
    else CHECK(std::isinf(logits[i]));
  }
  CHECK_THROWS_AS(apply_token_mask(logits, std::span<const uint32_t>(mask).first(2)), std::invalid_argument);
  CHECK(compiler().mask_words() == (smollm2().vocab_size() + 31) / 32);
}

TEST_CASE("a wider logits row than the vocabulary: the extra ids are never allowed") {
  const int32_t width = smollm2().vocab_size() + 64;
  const constraint_compiler wide(smollm2(), width);
  constraint_matcher matcher(wide.compile({output_constraint::kind::json_object, ""}));
  std::vector<uint32_t> mask(size_t(wide.mask_words()));
  REQUIRE(matcher.fill_next_token_mask(mask));
  for (int32_t t = smollm2().vocab_size(); t < width; ++t) CHECK_FALSE(allowed(mask, t));
  CHECK_THROWS_AS(constraint_compiler(smollm2(), smollm2().vocab_size() - 1), std::invalid_argument);
}
