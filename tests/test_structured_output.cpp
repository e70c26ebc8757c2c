// Structured output in the engine, on the real model: constrained sequences share steps with free ones
// (continuous batching), survive preemption and prefix-cache hits, and end as their constraint says. The
// outputs are checked by simdjson, independently of the grammar engine that produced them; a free
// sequence's tokens are checked against the same request run alone (engine_test_support.hpp).
#include <simdjson.h>

#include <regex>
#include <set>
#include <string>
#include <vector>

#include "engine_test_support.hpp"

using namespace inflight;
using namespace inflight::test;
using end_reason = inflight::engine::finish_reason;

namespace {

const std::string person_schema = R"({
  "type": "object",
  "properties": {
    "name": {"type": "string", "enum": ["Ada", "Grace", "Linus"]},
    "age": {"type": "integer", "minimum": 0, "maximum": 120},
    "admin": {"type": "boolean"}
  },
  "required": ["name", "age", "admin"]
})";

generation_params person_request(std::vector<int32_t> prompt, float temperature = 0, uint64_t seed = 0) {
  generation_params params;
  params.prompt_tokens = std::move(prompt);
  params.sampling.temperature = temperature;
  if (temperature > 0) params.sampling.seed = seed;
  params.max_tokens = 48;
  params.constraint = {output_constraint::kind::json_schema, person_schema};
  return params;
}

generation_params chat_person_request(float temperature = 0, uint64_t seed = 0) {
  generation_params params = person_request({}, temperature, seed);
  params.messages = {{"user", "Describe one famous programmer as JSON with a name, an age and whether they are an admin."}};
  return params;
}

// The output is a JSON object that validates against person_schema; fails the test otherwise.
void check_person(const std::string& text) {
  INFO("output: " << text);
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  REQUIRE(parser.parse(text).get(root) == simdjson::SUCCESS);
  simdjson::dom::object object;
  REQUIRE(root.get_object().get(object) == simdjson::SUCCESS);
  std::string_view name;
  REQUIRE(object["name"].get_string().get(name) == simdjson::SUCCESS);
  CHECK(std::set<std::string_view>{"Ada", "Grace", "Linus"}.count(name) == 1);
  int64_t age = -1;
  REQUIRE(object["age"].get_int64().get(age) == simdjson::SUCCESS);
  CHECK(age >= 0);
  CHECK(age <= 120);
  bool admin = false;
  REQUIRE(object["admin"].get_bool().get(admin) == simdjson::SUCCESS);
  CHECK(object.size() == 3);
}

}  // namespace

TEST_CASE("constrained and free sequences in the same steps: the constrained validate, the free are unchanged") {
  auto eng = make_engine();
  std::mt19937 rng(21);
  std::vector<generation_params> requests;
  requests.push_back(chat_person_request());
  requests.push_back(chat_person_request(0.9f, 1));
  requests.push_back(chat_person_request(0.9f, 2));
  requests.push_back(person_request(random_prompt(rng, 24)));
  for (int i = 0; i < 4; ++i) requests.push_back(greedy(random_prompt(rng, 20), 24, false));
  const auto sinks = run_all(*eng, requests);
  for (size_t i = 0; i < 4; ++i) {
    CAPTURE(i);
    CHECK(sinks[i]->result.reason == end_reason::stop);  // the model ended where the schema was complete
    check_person(sinks[i]->result.text);
  }
  for (size_t i = 4; i < requests.size(); ++i) CHECK(sinks[i]->tokens == run_alone(requests[i]));
  // A constrained request alone gives what it gave in the batch (greedy, and seeded).
  for (size_t i = 0; i < 3; ++i) CHECK(run_all(*eng, {requests[i]})[0]->tokens == sinks[i]->tokens);
  check_drained(*eng);
}

TEST_CASE("a constrained sequence survives preemption and a prefix-cache hit with the same output") {
  std::mt19937 rng(8);
  std::vector<generation_params> requests;
  for (int i = 0; i < 10; ++i) requests.push_back(person_request(random_prompt(rng, 40)));
  std::vector<std::vector<int32_t>> alone;
  {
    auto roomy = make_engine();
    for (const auto& request : requests) alone.push_back(run_all(*roomy, {request})[0]->tokens);
  }
  // 10 requests of 40 prompt tokens + up to 48 generated need 3-6 blocks each; the pool has 16.
  auto tight = make_engine({}, {.num_blocks = 16});
  const auto sinks = run_all(*tight, requests);
  CHECK(tight->stats().preemptions > 0);
  for (size_t i = 0; i < requests.size(); ++i) {
    CAPTURE(i);
    CHECK(sinks[i]->tokens == alone[i]);
    check_person(sinks[i]->result.text);
  }
  check_drained(*tight);

  // The same request again: its prompt comes from the prefix cache, its output is the same.
  auto eng = make_engine();
  const auto first = run_all(*eng, {requests[0]});
  const int64_t hits_before = eng->stats().prefix_hit_tokens;
  const auto second = run_all(*eng, {requests[0]});
  CHECK(eng->stats().prefix_hit_tokens - hits_before >= 32);
  CHECK(second[0]->tokens == first[0]->tokens);
  check_drained(*eng);
}

TEST_CASE("a constraint that cannot be met within max_tokens ends with length, its output cut short") {
  auto eng = make_engine();
  generation_params params = chat_person_request();
  params.max_tokens = 4;
  const auto sinks = run_all(*eng, {params});
  CHECK(sinks[0]->result.reason == end_reason::length);
  CHECK(sinks[0]->result.completion_tokens == 4);
  CHECK(sinks[0]->result.text.rfind("{", 0) == 0);  // the start of the object, as far as it got
  check_drained(*eng);
}

TEST_CASE("every kind of constraint steers the real model: JSON object, grammar, regex") {
  auto eng = make_engine();
  generation_params object = chat_person_request();
  object.constraint = {output_constraint::kind::json_object, ""};
  generation_params grammar = chat_person_request();
  grammar.messages = {{"user", "Is the sky blue? Answer yes or no."}};
  grammar.constraint = {output_constraint::kind::grammar, "root ::= (\"yes\" | \"no\") \".\""};
  generation_params regex = chat_person_request();
  regex.messages = {{"user", "When did the first person walk on the moon? Give the date."}};
  regex.constraint = {output_constraint::kind::regex, "[0-9]{4}-[0-9]{2}-[0-9]{2}"};
  const auto sinks = run_all(*eng, {object, grammar, regex});

  simdjson::dom::parser parser;
  simdjson::dom::element root;
  INFO("json_object output: " << sinks[0]->result.text);
  REQUIRE(sinks[0]->result.reason == end_reason::stop);
  REQUIRE(parser.parse(sinks[0]->result.text).get(root) == simdjson::SUCCESS);
  CHECK(root.is_object());
  CHECK(std::set<std::string>{"yes.", "no."}.count(sinks[1]->result.text) == 1);
  CHECK(sinks[1]->result.reason == end_reason::stop);
  INFO("regex output: " << sinks[2]->result.text);
  CHECK(std::regex_match(sinks[2]->result.text, std::regex("[0-9]{4}-[0-9]{2}-[0-9]{2}")));
  CHECK(sinks[2]->result.reason == end_reason::stop);
  check_drained(*eng);
}

TEST_CASE("a constraint that does not compile, or one with ignore_eos, is an invalid request") {
  auto eng = make_engine();
  generation_params bad_schema = chat_person_request();
  bad_schema.constraint.text = "{\"type\": ";
  generation_params bad_grammar = chat_person_request();
  bad_grammar.constraint = {output_constraint::kind::grammar, "root ::= (\"a\""};
  generation_params endless = chat_person_request();
  endless.ignore_eos = true;
  const auto sinks = run_all(*eng, {bad_schema, bad_grammar, endless});
  for (const auto& sink : sinks) {
    CHECK(sink->result.reason == end_reason::error);
    CHECK(sink->result.error == request_error::invalid_request);
    CHECK(sink->tokens.empty());
  }
  CHECK(sinks[0]->result.message.rfind("invalid json_schema: ", 0) == 0);
  CHECK(sinks[1]->result.message.rfind("invalid grammar: ", 0) == 0);
  CHECK(sinks[2]->result.message.find("ignore_eos") != std::string::npos);
  check_drained(*eng);
}
