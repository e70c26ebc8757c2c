// Every row of README's "Request fields" table that parsing decides: the fields inflight does not honour
// (net/request_field_policy.hpp: each refused one with a value that asks for something is a 400 naming it,
// with null and its neutral values it is accepted; each harmless one is accepted whatever it holds), and
// the honoured fields' edge cases: logit_bias, echo, best_of, skip_special_tokens, stream_options,
// max_completion_tokens, seed,
// n with streaming, stop, the logprobs counts. The server-side half (what logit_bias and echo do to the
// answer) is in test_request_fields_server.
#include <doctest/doctest.h>

#include <string>
#include <variant>

#include "openai_request.hpp"
#include "request_field_policy.hpp"

using namespace inflight;
using namespace inflight::net;

namespace {

const std::string chat_start = R"({"messages": [{"role": "user", "content": "hi"}], )";
const std::string completion_start = R"({"prompt": "hi", )";

std::string body(endpoint kind, const std::string& fields) {
  return (kind == endpoint::chat_completions ? chat_start : completion_start) + fields + "}";
}

completion_request accepted(endpoint kind, const std::string& fields) {
  const parse_result result = parse_request(kind, body(kind, fields));
  if (const auto* error = std::get_if<api_error>(&result)) FAIL("refused: " << fields << ": " << error->message);
  return std::get<completion_request>(result);
}

api_error refused(endpoint kind, const std::string& fields) {
  const parse_result result = parse_request(kind, body(kind, fields));
  INFO(fields);
  REQUIRE(std::holds_alternative<api_error>(result));
  const api_error error = std::get<api_error>(result);
  CHECK(error.status == 400);
  CHECK(error.type == "invalid_request_error");
  return error;
}

// A value of the same JSON kind as the neutral ones that asks for something.
std::string non_neutral_value(const unhonoured_field& field) {
  const std::string_view first = field.neutral.substr(0, field.neutral.find('|'));
  if (first.empty()) return R"("something")";
  if (first == "true") return "false";
  if (first == "false") return "true";
  if (first.front() == '[') return R"(["something"])";
  if (first.front() == '{') return R"({"x": 1})";
  if (first.front() == '"') return R"("something")";
  return "7";  // numbers
}

}  // namespace

TEST_CASE("each refused field: a value that asks for something is a 400 naming it; null and neutral values pass") {
  int refused_rows = 0, ignored_rows = 0;
  for (const unhonoured_field& field : unhonoured_fields()) {
    const std::string name(field.name);
    INFO("field " << name);
    for (const endpoint kind : {endpoint::completions, endpoint::chat_completions}) {
      accepted(kind, "\"" + name + "\": null");
      if (!field.refused) {
        accepted(kind, "\"" + name + "\": " + R"({"any": ["value", 1]})");
        accepted(kind, "\"" + name + "\": 12");
        continue;
      }
      std::string_view neutral = field.neutral;
      while (!neutral.empty()) {
        const size_t bar = neutral.find('|');
        // Whitespace inside the value does not matter.
        const std::string_view value = neutral.substr(0, bar);
        std::string spaced(value.substr(0, 1));
        if (value.size() > 2 && (value.front() == '[' || value.front() == '{')) spaced += ' ';
        spaced += value.substr(1);
        accepted(kind, "\"" + name + "\": " + spaced);
        neutral = bar == std::string_view::npos ? std::string_view() : neutral.substr(bar + 1);
      }
      const api_error error = refused(kind, "\"" + name + "\": " + non_neutral_value(field));
      CHECK(error.param == name);
      CHECK(error.message.find("'" + name + "' is not supported: " + std::string(field.why)) == 0);
    }
    (field.refused ? refused_rows : ignored_rows) += 1;
  }
  CHECK(refused_rows >= 25);
  CHECK(ignored_rows >= 8);
  // Not in any list and not read: ignored (a harmless extra some client sends).
  accepted(endpoint::chat_completions, R"("x_client_trace": {"id": 5})");
}

TEST_CASE("logit_bias: token ids as strings, biases in [-100, 100], at most 1024, the last of a repeated id") {
  const completion_request r = accepted(endpoint::completions, R"("logit_bias": {"42": -100, "7": 5.5, "42": 100})");
  using entry = std::pair<int32_t, float>;
  CHECK(r.params.sampling.logit_bias == std::vector<entry>{{7, 5.5f}, {42, 100.0f}});
  CHECK(accepted(endpoint::chat_completions, R"("logit_bias": {})").params.sampling.logit_bias.empty());
  CHECK(accepted(endpoint::chat_completions, R"("logit_bias": null)").params.sampling.logit_bias.empty());
  CHECK(refused(endpoint::chat_completions, R"("logit_bias": {"x": 1})").message.find("token ids") != std::string::npos);
  CHECK(refused(endpoint::chat_completions, R"("logit_bias": {"-3": 1})").param == "logit_bias");
  CHECK(refused(endpoint::chat_completions, R"("logit_bias": {"3": "1"})").param == "logit_bias");
  CHECK(refused(endpoint::chat_completions, R"("logit_bias": {"3": 101})").message.find("[-100, 100]") != std::string::npos);
  CHECK(refused(endpoint::chat_completions, R"("logit_bias": [1, 2])").param == "logit_bias");
  std::string many = R"("logit_bias": {)";
  for (int i = 0; i <= 1024; ++i) many += (i ? ", \"" : "\"") + std::to_string(i) + "\": 1";
  CHECK(refused(endpoint::completions, many + "}").message.find("at most 1024") != std::string::npos);
  // Ids beyond the vocabulary are refused by the engine, which knows it (test_request_fields_server).
}

TEST_CASE("echo on completions; not on chat, not with logprobs") {
  CHECK(accepted(endpoint::completions, R"("echo": true)").echo);
  CHECK_FALSE(accepted(endpoint::completions, R"("echo": false)").echo);
  CHECK_FALSE(accepted(endpoint::chat_completions, R"("echo": false)").echo);
  CHECK(refused(endpoint::chat_completions, R"("echo": true)").param == "echo");
  CHECK(refused(endpoint::completions, R"("echo": true, "logprobs": 1)").param == "echo");
  CHECK(refused(endpoint::completions, R"("echo": "yes")").param == "echo");
}

TEST_CASE("best_of equal to n is n; smaller or larger is a 400") {
  CHECK(accepted(endpoint::completions, R"("best_of": 1)").n == 1);
  CHECK(accepted(endpoint::completions, R"("best_of": 3, "n": 3)").n == 3);
  CHECK(refused(endpoint::completions, R"("best_of": 1, "n": 2)").message.find("at least 'n'") != std::string::npos);
  const api_error larger = refused(endpoint::completions, R"("best_of": 4, "n": 2)");
  CHECK(larger.param == "best_of");
  CHECK(larger.message.find("not supported") != std::string::npos);
  CHECK(refused(endpoint::chat_completions, R"("best_of": 2)").param == "best_of");
}

TEST_CASE("stream_options: include_usage only, and only with stream") {
  CHECK(accepted(endpoint::completions, R"("stream": true, "stream_options": {"include_usage": true})").include_usage);
  CHECK_FALSE(accepted(endpoint::completions, R"("stream": true, "stream_options": {})").include_usage);
  accepted(endpoint::completions, R"("stream_options": null)");
  CHECK(refused(endpoint::completions, R"("stream_options": {"include_usage": true})").param == "stream_options");
  CHECK(refused(endpoint::chat_completions, R"("stream": false, "stream_options": {"include_usage": true})").param ==
        "stream_options");
  CHECK(refused(endpoint::completions, R"("stream": true, "stream_options": {"continuous_usage_stats": true})").param ==
        "stream_options.continuous_usage_stats");
  CHECK(refused(endpoint::completions, R"("stream": true, "stream_options": [true])").param == "stream_options");
}

TEST_CASE("skip_special_tokens: true by default, false keeps special tokens' text") {
  CHECK(accepted(endpoint::completions, "\"n\": 1").params.skip_special_tokens);
  CHECK_FALSE(accepted(endpoint::completions, R"("skip_special_tokens": false)").params.skip_special_tokens);
  CHECK(refused(endpoint::chat_completions, R"("skip_special_tokens": 0)").param == "skip_special_tokens");
}

TEST_CASE("max_completion_tokens, alone or agreeing with max_tokens") {
  CHECK(accepted(endpoint::chat_completions, R"("max_completion_tokens": 9)").params.max_tokens == 9);
  CHECK(accepted(endpoint::chat_completions, R"("max_completion_tokens": 9, "max_tokens": 9)").params.max_tokens == 9);
  CHECK(refused(endpoint::chat_completions, R"("max_completion_tokens": 9, "max_tokens": 10)").param == "max_completion_tokens");
  CHECK(refused(endpoint::chat_completions, R"("max_completion_tokens": 0)").param == "max_tokens");
}

TEST_CASE("seed: any integer; anything else is a 400") {
  CHECK(*accepted(endpoint::completions, R"("seed": 7)").params.sampling.seed == 7);
  CHECK(accepted(endpoint::completions, R"("seed": -1)").params.sampling.seed.has_value());  // OpenAI allows any int
  CHECK_FALSE(accepted(endpoint::completions, R"("seed": null)").params.sampling.seed.has_value());
  CHECK(refused(endpoint::completions, R"("seed": 1.5)").param == "seed");
  CHECK(refused(endpoint::completions, R"("seed": "7")").param == "seed");
  CHECK(refused(endpoint::completions, R"("seed": 18446744073709551616)").param == "seed");
}

TEST_CASE("n with streaming, stop edge cases and the logprobs counts") {
  const completion_request streamed = accepted(endpoint::chat_completions, R"("n": 3, "stream": true)");
  CHECK(streamed.n == 3);
  CHECK(streamed.stream);

  CHECK(accepted(endpoint::completions, R"("stop": null)").params.stop.empty());
  CHECK(accepted(endpoint::completions, R"("stop": [])").params.stop.empty());
  CHECK(accepted(endpoint::completions, R"("stop": "\n\n")").params.stop == std::vector<std::string>{"\n\n"});
  CHECK(accepted(endpoint::completions, R"("stop": ["a", "a"])").params.stop.size() == 2);
  CHECK(refused(endpoint::completions, R"("stop": "")").param == "stop");
  CHECK(refused(endpoint::completions, R"("stop": [1])").param == "stop");
  std::string seventeen = R"("stop": ["s0")";
  for (int i = 1; i < 17; ++i) seventeen += ", \"s" + std::to_string(i) + "\"";
  CHECK(refused(endpoint::completions, seventeen + "]").message.find("at most 16") != std::string::npos);

  CHECK(accepted(endpoint::completions, R"("logprobs": 20)").params.sampling.top_logprobs == 20);
  CHECK(accepted(endpoint::completions, R"("logprobs": 0)").params.sampling.logprobs);
  CHECK(refused(endpoint::completions, R"("logprobs": 21)").param == "logprobs");
  CHECK(refused(endpoint::completions, R"("logprobs": true)").param == "logprobs");
  CHECK(accepted(endpoint::chat_completions, R"("logprobs": true, "top_logprobs": 20)").params.sampling.top_logprobs == 20);
  CHECK(refused(endpoint::chat_completions, R"("logprobs": true, "top_logprobs": 21)").param == "top_logprobs");
  CHECK(refused(endpoint::chat_completions, R"("logprobs": 2)").param == "logprobs");
}
