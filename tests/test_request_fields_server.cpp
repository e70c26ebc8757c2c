// What the honoured fields of README's "Request fields" table do to an answer, through the server on the
// real model: logit_bias bans and forces tokens (ids beyond the vocabulary are a 400 from the engine),
// skip_special_tokens false keeps a special token's text, echo
// puts the prompt in front of the text (whole and streamed alike, token-id prompts decoded), n choices
// stream side by side, each with its own finish.
#include "http_test_support.hpp"

#include <map>
#include <string>

using namespace inflight;
using namespace inflight::test;

namespace {

std::string first_text(const reply& answer) {
  simdjson::dom::parser parser;
  return str(json(parser, answer.body)["choices"].at(0)["text"]);
}

int32_t single_token(const tokenizer& tok, const std::string& text) {
  const std::vector<int32_t> ids = tok.encode(text, false);
  REQUIRE(ids.size() == 1);
  return ids[0];
}

}  // namespace

TEST_CASE("logit_bias: -100 bans the greedy token, +100 forces one, an id beyond the vocabulary is a 400") {
  test_server served;
  const std::string prompt = R"({"prompt": "The capital of France is", "max_tokens": 3, "temperature": 0)";
  const std::string plain = first_text(post(served.port, "/v1/completions", prompt + "}"));
  REQUIRE(plain.rfind(" Paris", 0) == 0);  // the greedy answer this test moves away from

  const int32_t paris = single_token(*served.tok, " Paris");
  const std::string banned =
      first_text(post(served.port, "/v1/completions", prompt + R"(, "logit_bias": {")" + std::to_string(paris) + R"(": -100}})"));
  CHECK(banned.find("Paris") == std::string::npos);
  CHECK_FALSE(banned.empty());

  const int32_t london = single_token(*served.tok, " London");
  const std::string forced =
      first_text(post(served.port, "/v1/completions", prompt + R"(, "logit_bias": {")" + std::to_string(london) + R"(": 100}})"));
  CHECK(forced == " London London London");

  // Chat takes it too.
  const reply chat = post(served.port, "/v1/chat/completions",
                          R"({"messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 2, "temperature": 0, "logit_bias": {")" +
                              std::to_string(london) + R"(": 100}})");
  simdjson::dom::parser parser;
  CHECK(str(json(parser, chat.body)["choices"].at(0)["message"]["content"]) == " London London");

  const std::string beyond = std::to_string(served.tok->vocab_size());
  const reply out_of_range = post(served.port, "/v1/completions", prompt + R"(, "logit_bias": {")" + beyond + R"(": 1}})");
  CHECK(out_of_range.status == 400);
  CHECK(str(json(parser, out_of_range.body)["error"]["message"]).find("logit_bias token id " + beyond + " is out of range") !=
        std::string::npos);
  CHECK(served.engine->stats().kv_blocks_used == 0);
}

TEST_CASE("skip_special_tokens: a special token's text is left out unless asked for") {
  test_server served;
  const std::vector<int32_t> special = served.tok->encode("<|im_start|>", true);
  REQUIRE(special.size() == 1);
  REQUIRE(served.tok->is_special(special[0]));
  // logit_bias makes the model write it (it does not end the answer).
  const std::string request = R"({"prompt": "Hello", "max_tokens": 2, "temperature": 0, "logit_bias": {")" +
                              std::to_string(special[0]) + R"(": 100})";
  CHECK(first_text(post(served.port, "/v1/completions", request + "}")).empty());
  CHECK(first_text(post(served.port, "/v1/completions", request + R"(, "skip_special_tokens": false})")) ==
        "<|im_start|><|im_start|>");
}

TEST_CASE("echo: the prompt in front of each choice's text, whole and streamed") {
  test_server served;
  simdjson::dom::parser parser;
  const std::string prompt = "The capital of France is";
  const std::string request = R"({"prompt": ")" + prompt + R"(", "max_tokens": 4, "temperature": 0)";
  const std::string plain = first_text(post(served.port, "/v1/completions", request + "}"));
  const std::string echoed = first_text(post(served.port, "/v1/completions", request + R"(, "echo": true})"));
  CHECK(echoed == prompt + plain);

  const reply streamed = post(served.port, "/v1/completions", request + R"(, "echo": true, "stream": true})");
  std::string joined;
  for (const std::string& event : sse_events(streamed.body))
    if (event != "[DONE]") joined += str(json(parser, event)["choices"].at(0)["text"]);
  CHECK(joined == echoed);

  // Token ids are decoded, and with n > 1 each choice starts with the prompt; several prompts, each its own.
  std::string ids;
  for (const int32_t id : served.tok->encode("One, two,", false)) ids += (ids.empty() ? "" : ", ") + std::to_string(id);
  const reply from_ids = post(served.port, "/v1/completions", R"({"prompt": [)" + ids + R"(], "n": 2, "max_tokens": 2, "echo": true})");
  REQUIRE(from_ids.status == 200);
  const simdjson::dom::array choices = json(parser, from_ids.body)["choices"];
  REQUIRE(choices.size() == 2);
  for (const simdjson::dom::element choice : choices) CHECK(str(choice["text"]).rfind("One, two,", 0) == 0);
  const reply several = post(served.port, "/v1/completions",
                             R"({"prompt": [")" + prompt + R"(", "Red, green,"], "max_tokens": 2, "echo": true})");
  simdjson::dom::parser second_parser;
  const simdjson::dom::array both = json(second_parser, several.body)["choices"];
  REQUIRE(both.size() == 2);
  CHECK(str(both.at(0)["text"]).rfind(prompt, 0) == 0);
  CHECK(str(both.at(1)["text"]).rfind("Red, green,", 0) == 0);
}

TEST_CASE("n with streaming: every choice streams and finishes on its own index") {
  test_server served;
  simdjson::dom::parser parser;
  const reply streamed = post(served.port, "/v1/chat/completions",
                              R"({"messages": [{"role": "user", "content": "Tell me a story"}], "n": 3, "max_tokens": 5,
                                  "temperature": 0.8, "seed": 1, "stream": true})");
  REQUIRE(streamed.status == 200);
  std::map<int64_t, std::string> texts, finishes;
  for (const std::string& event : sse_events(streamed.body)) {
    if (event == "[DONE]") continue;
    const simdjson::dom::element choice = json(parser, event)["choices"].at(0);
    const int64_t index = int64_t(choice["index"]);
    std::string_view piece;
    if (choice["delta"]["content"].get_string().get(piece) == simdjson::SUCCESS) texts[index] += piece;
    if (choice["finish_reason"].get_string().get(piece) == simdjson::SUCCESS) {
      CHECK(finishes[index].empty());  // once per choice
      finishes[index] = piece;
    }
  }
  CHECK(finishes.size() == 3);
  for (const auto& [index, finish] : finishes) CHECK((finish == "length" || finish == "stop"));
  CHECK(texts.size() == 3);
}
