// OpenAI request bodies: every accepted form of each field, unknown fields ignored, and every bad input
// answered with a 400 whose error names the field (net/openai_request.hpp).
#include <doctest/doctest.h>

#include <random>
#include <string>
#include <variant>

#include "openai_request.hpp"

using namespace inflight;
using namespace inflight::net;

namespace {

completion_request ok(endpoint kind, const std::string& body) {
  const parse_result result = parse_request(kind, body);
  if (const auto* error = std::get_if<api_error>(&result)) FAIL("unexpected error: " << error->message);
  return std::get<completion_request>(result);
}

api_error error_of(endpoint kind, const std::string& body) {
  const parse_result result = parse_request(kind, body);
  REQUIRE(std::holds_alternative<api_error>(result));
  return std::get<api_error>(result);
}

}  // namespace

TEST_CASE("a completion request with every field") {
  const completion_request r = ok(endpoint::completions, R"({
    "model": "smollm2", "prompt": "Hello", "max_tokens": 12, "temperature": 0.5, "top_p": 0.9, "top_k": 40,
    "min_p": 0.05, "presence_penalty": 0.5, "frequency_penalty": -0.5, "repetition_penalty": 1.1, "seed": 7,
    "stop": ["\n", "END"], "n": 2, "logprobs": 3, "ignore_eos": true, "user": "u1", "stream": true,
    "stream_options": {"include_usage": true}, "some_future_field": {"nested": [1, 2, {"x": null}]}})");
  CHECK(r.kind == endpoint::completions);
  CHECK(r.model == "smollm2");
  REQUIRE(r.prompt_texts.size() == 1);
  CHECK(r.prompt_texts[0] == "Hello");
  CHECK(r.prompt_tokens.empty());
  CHECK(r.params.max_tokens == 12);
  CHECK(r.params.sampling.temperature == 0.5f);
  CHECK(r.params.sampling.top_p == 0.9f);
  CHECK(r.params.sampling.top_k == 40);
  CHECK(r.params.sampling.min_p == 0.05f);
  CHECK(r.params.sampling.presence_penalty == 0.5f);
  CHECK(r.params.sampling.frequency_penalty == -0.5f);
  CHECK(r.params.sampling.repetition_penalty == 1.1f);
  REQUIRE(r.params.sampling.seed.has_value());
  CHECK(*r.params.sampling.seed == 7);
  CHECK(r.params.stop == std::vector<std::string>{"\n", "END"});
  CHECK(r.n == 2);
  CHECK(r.params.sampling.logprobs);
  CHECK(r.params.sampling.top_logprobs == 3);
  CHECK(r.params.ignore_eos);
  CHECK(r.user == "u1");
  CHECK(r.stream);
  CHECK(r.include_usage);
}

TEST_CASE("defaults when fields are absent or null") {
  const completion_request r =
      ok(endpoint::completions, R"({"prompt": "x", "max_tokens": null, "stop": null, "temperature": null})");
  CHECK(r.params.max_tokens == request_limits{}.default_max_tokens);
  CHECK(r.params.stop.empty());
  CHECK(r.params.sampling.temperature == sampling_params{}.temperature);
  CHECK(r.n == 1);
  CHECK_FALSE(r.stream);
  CHECK_FALSE(r.params.sampling.logprobs);
}

TEST_CASE("every prompt form") {
  CHECK(ok(endpoint::completions, R"({"prompt": ["a", "b", "c"]})").prompt_texts == std::vector<std::string>{"a", "b", "c"});
  const completion_request ids = ok(endpoint::completions, R"({"prompt": [1, 2, 3]})");
  REQUIRE(ids.prompt_tokens.size() == 1);
  CHECK(ids.prompt_tokens[0] == std::vector<int32_t>{1, 2, 3});
  const completion_request batches = ok(endpoint::completions, R"({"prompt": [[1, 2], [3]]})");
  REQUIRE(batches.prompt_tokens.size() == 2);
  CHECK(batches.prompt_tokens[1] == std::vector<int32_t>{3});
  CHECK(ok(endpoint::completions, R"({"prompt": "caf\u00e9 \ud83d\ude00"})").prompt_texts[0] == "café 😀");
  CHECK(ok(endpoint::completions, R"({"max_completion_tokens": 5, "prompt": "x"})").params.max_tokens == 5);
}

TEST_CASE("a chat request with string and text-part contents") {
  const completion_request r = ok(endpoint::chat_completions, R"({
    "model": "m", "messages": [{"role": "system", "content": "Be brief."},
                               {"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]},
                               {"role": "assistant", "content": null, "name": "bot"}],
    "logprobs": true, "top_logprobs": 4, "prompt": "ignored here"})");
  REQUIRE(r.messages.size() == 3);
  CHECK(r.messages[0].role == "system");
  CHECK(r.messages[0].content == "Be brief.");
  CHECK(r.messages[1].content == "Hi there");
  CHECK(r.messages[2].content.empty());
  CHECK(r.prompt_texts.empty());
  CHECK(r.params.sampling.logprobs);
  CHECK(r.params.sampling.top_logprobs == 4);
}

TEST_CASE("bad requests name the field") {
  struct bad_case {
    endpoint kind;
    const char* body;
    const char* param;
    const char* message_part;
  };
  const endpoint c = endpoint::completions, chat = endpoint::chat_completions;
  const bad_case cases[] = {
      {c, R"({"prompt": "x", )", "", "invalid JSON"},
      {c, R"({"prompt": "x"} trailing)", "", "invalid JSON"},
      {c, "", "", "invalid JSON"},
      {c, R"([1, 2])", "", "must be a JSON object"},
      {c, R"({})", "prompt", "required"},
      {c, R"({"prompt": ""})", "prompt", "empty"},
      {c, R"({"prompt": []})", "prompt", "empty"},
      {c, R"({"prompt": [[]]})", "prompt", "empty"},
      {c, R"({"prompt": 5})", "prompt", "must be a string"},
      {c, R"({"prompt": ["a", 1]})", "prompt", "mixes"},
      {c, R"({"prompt": [-1]})", "prompt", "non-negative"},
      {c, R"({"prompt": [1.5]})", "prompt", "non-negative"},
      {c, R"({"prompt": "x", "max_tokens": 0})", "max_tokens", "at least 1"},
      {c, R"({"prompt": "x", "max_tokens": -3})", "max_tokens", "at least 1"},
      {c, R"({"prompt": "x", "max_tokens": "12"})", "max_tokens", "integer"},
      {c, R"({"prompt": "x", "max_tokens": 1.5})", "max_tokens", "integer"},
      {c, R"({"prompt": "x", "temperature": -0.1})", "temperature", ">= 0"},
      {c, R"({"prompt": "x", "temperature": "hot"})", "temperature", "number"},
      {c, R"({"prompt": "x", "top_p": 0})", "top_p", "(0, 1]"},
      {c, R"({"prompt": "x", "top_p": 1.5})", "top_p", "(0, 1]"},
      {c, R"({"prompt": "x", "min_p": 2})", "min_p", "[0, 1]"},
      {c, R"({"prompt": "x", "presence_penalty": 3})", "presence_penalty", "[-2, 2]"},
      {c, R"({"prompt": "x", "repetition_penalty": 0})", "repetition_penalty", "> 0"},
      {c, R"({"prompt": "x", "top_k": -2})", "top_k", ">= -1"},
      {c, R"({"prompt": "x", "n": 0})", "n", "between 1 and"},
      {c, R"({"prompt": "x", "n": 1000})", "n", "between 1 and"},
      {c, R"({"prompt": "x", "stop": 3})", "stop", "string or an array"},
      {c, R"({"prompt": "x", "stop": [""]})", "stop", "not be empty"},
      {c, R"({"prompt": "x", "stream": "yes"})", "stream", "boolean"},
      {c, R"({"prompt": "x", "logprobs": 21})", "logprobs", "between 0 and 20"},
      {c, R"({"prompt": "x", "model": 3})", "model", "string"},
      {c, R"({"prompt": "x", "stream": true, "stream_options": {"include_usage": 1}})", "stream_options.include_usage", "boolean"},
      {chat, R"({"model": "m"})", "messages", "at least one"},
      {chat, R"({"messages": []})", "messages", "at least one"},
      {chat, R"({"messages": "hi"})", "messages", "array"},
      {chat, R"({"messages": [{"content": "hi"}]})", "messages", "role"},
      {chat, R"({"messages": [{"role": "wizard", "content": "hi"}]})", "messages", "unknown message role"},
      {chat, R"({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})", "messages", "text"},
      {chat, R"({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 3})", "top_logprobs", "logprobs"},
      {chat, R"({"messages": [{"role": "user", "content": "x"}], "logprobs": true, "top_logprobs": 30})", "top_logprobs", "between 0 and 20"},
  };
  for (const bad_case& test : cases) {
    INFO("body: " << test.body);
    const api_error error = error_of(test.kind, test.body);
    CHECK(error.status == 400);
    CHECK(error.type == "invalid_request_error");
    CHECK(error.param == test.param);
    CHECK(error.message.find(test.message_part) != std::string::npos);
  }
}

TEST_CASE("random bytes and truncated bodies give errors and never crash") {
  const std::string good = R"({"model": "m", "prompt": ["a", "b"], "max_tokens": 5, "stop": ["x"], "stream_options": {"include_usage": true}})";
  for (size_t cut = 0; cut < good.size(); ++cut)
    CHECK(std::holds_alternative<api_error>(parse_request(endpoint::completions, good.substr(0, cut))));
  std::mt19937 rng(5);
  std::uniform_int_distribution<int> byte(0, 255), length(0, 200);
  for (int i = 0; i < 2000; ++i) {
    std::string noise(static_cast<size_t>(length(rng)), '\0');
    for (char& ch : noise) ch = char(byte(rng));
    const parse_result result = parse_request(endpoint::chat_completions, noise);
    CHECK(std::holds_alternative<api_error>(result));
  }
}
