// Tool calls through the HTTP server. What the model writes is fixed by a script backend
// (tests/script_backend.hpp), so each case tests the server's handling of a given output: a call in the
// answer becomes message.tool_calls (whole) or a delta.tool_calls chunk (streamed) with finish_reason
// "tool_calls", and no part of the call leaks out as content; text that only looks like a call goes out as
// text. tool_choice "required" and a named function run on the real model under the constraint: whatever
// it writes is a valid call. WebSocket requests with tools are refused.
#include "http_test_support.hpp"

#include <string>

#include "script_backend.hpp"

using namespace inflight;
using namespace inflight::test;

namespace {

// The server over the real model, made to write `script` (then end of sequence) when decoding greedily.
struct scripted_server {
  test_server served;
  // test_server sets its tokenizer before it calls the wrapper, so the wrapper may use it.
  explicit scripted_server(const std::string& script)
      : served({}, {}, [this, &script](std::unique_ptr<backend> inner) -> std::unique_ptr<backend> {
          return std::make_unique<script_backend>(std::move(inner), served.tok->encode(script, false),
                                                  served.tok->eos_id());
        }) {}
};

const std::string tools_field =
    R"("tools": [{"type": "function", "function": {"name": "get_weather", "description": "The current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
      {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}])";

std::string chat_body(const std::string& extra) {
  return R"({"messages": [{"role": "user", "content": "What is the weather in Paris?"}], "temperature": 0, "max_tokens": 60, )" +
         tools_field + extra + "}";
}

// A streamed chat answer put back together: the content deltas, the tool_calls deltas, the finish reason.
struct streamed_chat {
  std::string content;
  std::vector<std::string> call_names, call_arguments;
  std::string finish_reason;
  int chunks_after_finish = 0;
};

streamed_chat read_stream(const std::string& body) {
  streamed_chat out;
  simdjson::dom::parser parser;
  const std::vector<std::string> events = sse_events(body);
  REQUIRE(!events.empty());
  CHECK(events.back() == "[DONE]");
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    const simdjson::dom::element choice = json(parser, events[i])["choices"].at(0);
    if (!out.finish_reason.empty()) ++out.chunks_after_finish;
    const simdjson::dom::element delta = choice["delta"];
    std::string_view text;
    if (delta["content"].get_string().get(text) == simdjson::SUCCESS) out.content += text;
    simdjson::dom::array calls;
    if (delta["tool_calls"].get_array().get(calls) == simdjson::SUCCESS) {
      for (const simdjson::dom::element call : calls) {
        CHECK(int64_t(call["index"]) == int64_t(out.call_names.size()));
        CHECK(str(call["id"]).rfind("chatcmpl-", 0) == 0);
        CHECK(str(call["type"]) == "function");
        out.call_names.push_back(str(call["function"]["name"]));
        out.call_arguments.push_back(str(call["function"]["arguments"]));
      }
    }
    if (choice["finish_reason"].get_string().get(text) == simdjson::SUCCESS) out.finish_reason = text;
  }
  return out;
}

}  // namespace

TEST_CASE("auto: a <tool_call> in the answer comes back as message.tool_calls, whole and streamed") {
  scripted_server server(
      "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>");
  const uint16_t port = server.served.port;
  simdjson::dom::parser parser;

  const reply whole = post(port, "/v1/chat/completions", chat_body(""));
  REQUIRE(whole.status == 200);
  const simdjson::dom::element choice = json(parser, whole.body)["choices"].at(0);
  CHECK(str(choice["finish_reason"]) == "tool_calls");
  CHECK(str(choice["message"]["content"]) == "Let me check.");
  const simdjson::dom::array calls = choice["message"]["tool_calls"];
  REQUIRE(calls.size() == 1);
  CHECK(str(calls.at(0)["type"]) == "function");
  CHECK(str(calls.at(0)["function"]["name"]) == "get_weather");
  CHECK(str(calls.at(0)["function"]["arguments"]) == R"({"city":"Paris"})");
  CHECK(calls.at(0)["index"].error() == simdjson::NO_SUCH_FIELD);  // the index is for stream deltas

  const reply streamed = post(port, "/v1/chat/completions", chat_body(R"(, "stream": true)"));
  REQUIRE(streamed.status == 200);
  const streamed_chat chat = read_stream(streamed.body);
  CHECK(chat.content == "Let me check.\n");  // what was streamed before the call; no part of the call
  REQUIRE(chat.call_names.size() == 1);
  CHECK(chat.call_names[0] == "get_weather");
  CHECK(chat.call_arguments[0] == R"({"city":"Paris"})");
  CHECK(chat.finish_reason == "tool_calls");
  CHECK(chat.chunks_after_finish == 0);

  CHECK(server.served.engine->stats().kv_blocks_used == 0);
}

TEST_CASE("auto: text that only looks like a call is the answer, streamed in full") {
  // An unknown function: not a call. The "<" and "<tool_" prefixes are held and then sent.
  const std::string script = "Use <b>bold</b>. <tool_call>{\"name\": \"launch_rocket\", \"arguments\": {}}</tool_call>";
  scripted_server server(script);
  const uint16_t port = server.served.port;
  simdjson::dom::parser parser;

  const reply whole = post(port, "/v1/chat/completions", chat_body(""));
  REQUIRE(whole.status == 200);
  const simdjson::dom::element choice = json(parser, whole.body)["choices"].at(0);
  CHECK(str(choice["finish_reason"]) == "stop");
  CHECK(str(choice["message"]["content"]) == script);
  CHECK(choice["message"]["tool_calls"].error() == simdjson::NO_SUCH_FIELD);

  const streamed_chat chat = read_stream(post(port, "/v1/chat/completions", chat_body(R"(, "stream": true)")).body);
  CHECK(chat.content == script);
  CHECK(chat.call_names.empty());
  CHECK(chat.finish_reason == "stop");

  // tool_choice none: the text is not even looked at.
  const reply none = post(port, "/v1/chat/completions", chat_body(R"(, "tool_choice": "none")"));
  CHECK(str(json(parser, none.body)["choices"].at(0)["message"]["content"]) == script);
}

TEST_CASE("auto: parallel calls, and parallel_tool_calls false keeps the first") {
  scripted_server server(
      "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n"
      "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>");
  const uint16_t port = server.served.port;
  simdjson::dom::parser parser;
  const reply both = post(port, "/v1/chat/completions", chat_body(""));
  const simdjson::dom::element message = json(parser, both.body)["choices"].at(0)["message"];
  CHECK(message["content"].is_null());  // only calls: content is null, as OpenAI sends it
  const simdjson::dom::array calls = message["tool_calls"];
  REQUIRE(calls.size() == 2);
  CHECK(str(calls.at(1)["function"]["name"]) == "get_time");
  CHECK(str(calls.at(0)["id"]) != str(calls.at(1)["id"]));

  const streamed_chat chat = read_stream(post(port, "/v1/chat/completions", chat_body(R"(, "stream": true)")).body);
  CHECK(chat.call_names == std::vector<std::string>{"get_weather", "get_time"});
  CHECK(chat.content.empty());

  const reply first = post(port, "/v1/chat/completions", chat_body(R"(, "parallel_tool_calls": false)"));
  CHECK(json(parser, first.body)["choices"].at(0)["message"]["tool_calls"].get_array().size() == 1);
}

TEST_CASE("required and a named function: the real model's output is always a valid call") {
  test_server server;
  const uint16_t port = server.port;
  simdjson::dom::parser parser;
  for (const bool stream : {false, true}) {
    INFO("stream: " << stream);
    const std::string streaming = stream ? R"(, "stream": true)" : "";
    const reply required = post(port, "/v1/chat/completions", chat_body(R"(, "tool_choice": "required", "max_tokens": 120)" + streaming));
    REQUIRE(required.status == 200);
    const reply named = post(port, "/v1/chat/completions",
                             chat_body(R"(, "tool_choice": {"type": "function", "function": {"name": "get_weather"}}, "max_tokens": 120)" + streaming));
    REQUIRE(named.status == 200);
    for (const reply* answer : {&required, &named}) {
      std::vector<std::string> names, arguments;
      std::string finish;
      if (stream) {
        const streamed_chat chat = read_stream(answer->body);
        CHECK(chat.content.empty());
        names = chat.call_names;
        arguments = chat.call_arguments;
        finish = chat.finish_reason;
      } else {
        const simdjson::dom::element choice = json(parser, answer->body)["choices"].at(0);
        finish = str(choice["finish_reason"]);
        simdjson::dom::array calls;
        if (choice["message"]["tool_calls"].get_array().get(calls) == simdjson::SUCCESS) {
          for (const simdjson::dom::element call : calls) {
            names.push_back(str(call["function"]["name"]));
            arguments.push_back(str(call["function"]["arguments"]));
          }
        }
      }
      INFO(answer->body);
      REQUIRE(finish == "tool_calls");  // 120 tokens are plenty for this schema
      REQUIRE(!names.empty());
      for (size_t i = 0; i < names.size(); ++i) {
        CHECK((names[i] == "get_weather" || names[i] == "get_time"));
        simdjson::dom::element parsed;
        REQUIRE(parser.parse(arguments[i]).get(parsed) == simdjson::SUCCESS);
        REQUIRE(parsed.is_object());
        // get_weather's schema requires a string "city".
        if (names[i] == "get_weather") CHECK(parsed["city"].is_string());
      }
      if (answer == &named) CHECK(names == std::vector<std::string>{"get_weather"});
    }
  }
  CHECK(server.engine->stats().kv_blocks_used == 0);
}

TEST_CASE("a required call cut short by max_tokens is text with finish_reason length") {
  test_server server;
  simdjson::dom::parser parser;
  const reply cut = post(server.port, "/v1/chat/completions", chat_body(R"(, "tool_choice": "required", "max_tokens": 3)"));
  REQUIRE(cut.status == 200);
  const simdjson::dom::element choice = json(parser, cut.body)["choices"].at(0);
  CHECK(str(choice["finish_reason"]) == "length");
  CHECK(choice["message"]["tool_calls"].error() == simdjson::NO_SUCH_FIELD);
  CHECK(str(choice["message"]["content"]).rfind("[", 0) == 0);  // the start of the calls' JSON
}

TEST_CASE("WebSocket: a request with tools (or echo) gets an error frame naming the field") {
  test_server server;
  ws_client client(server.port);
  client.send(R"({"id": "t", "messages": [{"role": "user", "content": "hi"}], )" + tools_field + "}");
  const std::string frame = client.receive();
  INFO(frame);
  CHECK(frame.find("\"param\":\"tools\"") != std::string::npos);
  CHECK(frame.find("/v1/chat/completions") != std::string::npos);
  // tool_choice none shows no tools to the model: served as a plain chat.
  client.send(R"({"id": "n", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "tool_choice": "none", )" + tools_field + "}");
  std::string last;
  for (int i = 0; i < 20 && last.find("\"done\"") == std::string::npos && last.find("error") == std::string::npos; ++i)
    last = client.receive();
  CHECK(last.find("error") == std::string::npos);
  // echo, likewise, is the HTTP response's.
  client.send(R"({"id": "e", "type": "completion", "prompt": "hi", "echo": true})");
  CHECK(client.receive().find("\"param\":\"echo\"") != std::string::npos);
}
