// Tool calls without a model (net/tool_calls.hpp and the request fields): how calls are read from an
// output in each tool_choice mode, how a stream holds back what may start a call, the constraint of a
// required or named call, and the request fields (tools, tool_choice, parallel_tool_calls, the messages'
// tool_calls and tool results) with their 400s.
#include <doctest/doctest.h>

#include <simdjson.h>

#include <string>
#include <variant>

#include "openai_request.hpp"
#include "structured_output_request.hpp"
#include "tool_calls.hpp"

using namespace inflight;
using namespace inflight::net;

namespace {

const std::string weather_parameters =
    R"({"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}, "required": ["city"]})";

tool_spec weather_tools(tool_mode mode) {
  tool_spec tools;
  tools.functions = {{"get_weather", "The weather in a city", weather_parameters}, {"get_time", "", R"({"type": "object"})"}};
  tools.mode = mode;
  if (mode == tool_mode::named) tools.named = "get_weather";
  return tools;
}

std::optional<tool_output> parse(const tool_spec& tools, std::string_view text) {
  int next = 0;
  return parse_tool_output(tools, text, [&] { return "call_" + std::to_string(++next); });
}

const std::string tools_field =
    R"("tools": [{"type": "function", "function": {"name": "get_weather", "description": "The weather in a city", "parameters": )" +
    weather_parameters + R"(}}])";
const std::string user_message = R"("messages": [{"role": "user", "content": "Weather in Paris?"}])";

completion_request chat_request(const std::string& fields) {
  const parse_result result = parse_request(endpoint::chat_completions, "{" + user_message + ", " + fields + "}");
  if (const auto* error = std::get_if<api_error>(&result)) FAIL("unexpected error: " << error->message);
  return std::get<completion_request>(result);
}

api_error chat_error(const std::string& fields) {
  const parse_result result = parse_request(endpoint::chat_completions, "{" + user_message + ", " + fields + "}");
  REQUIRE(std::holds_alternative<api_error>(result));
  return std::get<api_error>(result);
}

}  // namespace

TEST_CASE("auto: <tool_call> blocks naming a listed function are calls; the text around them is the content") {
  const tool_spec tools = weather_tools(tool_mode::automatic);
  const auto one = parse(tools, "Let me look.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n");
  REQUIRE(one);
  REQUIRE(one->calls.size() == 1);
  CHECK(one->calls[0].id == "call_1");
  CHECK(one->calls[0].name == "get_weather");
  CHECK(one->calls[0].arguments == R"({"city":"Paris"})");  // minified JSON text, as OpenAI sends a string
  CHECK(one->content == "Let me look.");

  const auto two = parse(tools, "<tool_call>{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}</tool_call>"
                                "<tool_call>{\"name\": \"get_time\", \"arguments\": {}}</tool_call>");
  REQUIRE(two);
  REQUIRE(two->calls.size() == 2);
  CHECK(two->calls[1].name == "get_time");
  CHECK(two->calls[1].id == "call_2");
  CHECK(two->content.empty());

  // A block the model did not close (it ended there) still counts when its JSON is complete.
  REQUIRE(parse(tools, "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}"));

  // Not calls: no block, an unknown function, arguments that are not an object, broken JSON, a block cut
  // off mid-JSON. The whole output is then an answer.
  CHECK_FALSE(parse(tools, "It is sunny in Paris."));
  CHECK_FALSE(parse(tools, "<tool_call>{\"name\": \"launch\", \"arguments\": {}}</tool_call>"));
  CHECK_FALSE(parse(tools, "<tool_call>{\"name\": \"get_time\", \"arguments\": \"{}\"}</tool_call>"));
  CHECK_FALSE(parse(tools, "<tool_call>{\"name\": get_time}</tool_call>"));
  CHECK_FALSE(parse(tools, "<tool_call>{\"name\": \"get_weather\", \"arguments\": {\"ci"));
  // One malformed block makes the whole output an answer, not a partial set of calls.
  CHECK_FALSE(parse(tools, "<tool_call>{\"name\": \"get_time\", \"arguments\": {}}</tool_call><tool_call>oops</tool_call>"));

  // parallel_tool_calls false: the first call only.
  tool_spec single = tools;
  single.parallel = false;
  const auto first_only = parse(single, "<tool_call>{\"name\": \"get_weather\", \"arguments\": {}}</tool_call>"
                                       "<tool_call>{\"name\": \"get_time\", \"arguments\": {}}</tool_call>");
  REQUIRE(first_only);
  REQUIRE(first_only->calls.size() == 1);
  CHECK(first_only->calls[0].name == "get_weather");
  CHECK_FALSE(parse(weather_tools(tool_mode::none), "<tool_call>{\"name\": \"get_time\", \"arguments\": {}}</tool_call>"));
}

TEST_CASE("required and named: the whole output is the calls' JSON") {
  const auto required = parse(weather_tools(tool_mode::required),
                              R"([{"name": "get_weather", "arguments": {"city": "Rome"}}, {"name": "get_time", "arguments": {}}])");
  REQUIRE(required);
  REQUIRE(required->calls.size() == 2);
  CHECK(required->calls[0].arguments == R"({"city":"Rome"})");
  CHECK_FALSE(parse(weather_tools(tool_mode::required), "[]"));
  CHECK_FALSE(parse(weather_tools(tool_mode::required), R"([{"name": "get_wea)"));  // cut by max_tokens
  CHECK_FALSE(parse(weather_tools(tool_mode::required), R"([{"name": "nope", "arguments": {}}])"));

  const auto named = parse(weather_tools(tool_mode::named), R"({"city": "Lima", "days": 2})");
  REQUIRE(named);
  REQUIRE(named->calls.size() == 1);
  CHECK(named->calls[0].name == "get_weather");
  CHECK(named->calls[0].arguments == R"({"city":"Lima","days":2})");
  CHECK_FALSE(parse(weather_tools(tool_mode::named), R"({"city": "Li)"));
}

TEST_CASE("the constraint of a required or named call is a schema the engine enforces") {
  CHECK_FALSE(tool_output_constraint(weather_tools(tool_mode::automatic)).active());
  const output_constraint named = tool_output_constraint(weather_tools(tool_mode::named));
  CHECK(named.type == output_constraint::kind::json_schema);
  CHECK(named.text == weather_parameters);

  for (const bool parallel : {true, false}) {
    tool_spec tools = weather_tools(tool_mode::required);
    tools.parallel = parallel;
    const output_constraint required = tool_output_constraint(tools);
    CHECK(required.type == output_constraint::kind::json_schema);
    simdjson::dom::parser parser;
    simdjson::dom::element schema;
    INFO(required.text);
    REQUIRE(parser.parse(required.text).get(schema) == simdjson::SUCCESS);
    CHECK(int64_t(schema["minItems"]) == 1);
    CHECK((schema["maxItems"].error() == simdjson::SUCCESS) == !parallel);
    const simdjson::dom::array choices = schema["items"]["anyOf"];
    CHECK(choices.size() == 2);
  }
}

TEST_CASE("a stream sends text until a call may start and holds the rest") {
  tool_text_splitter splitter;
  CHECK(splitter.feed("The answer") == "The answer");
  CHECK(splitter.feed(" is <") == " is ");  // "<" may start "<tool_call>"
  CHECK(splitter.feed("b>") == "<b>");       // it did not
  CHECK(splitter.feed("ok <tool_") == "ok ");
  CHECK(splitter.feed("call>{\"name\"") == "");  // a call began: everything is held from here on
  CHECK(splitter.feed(" and more") == "");
  CHECK(splitter.held() == "<tool_call>{\"name\" and more");

  tool_text_splitter at_once;
  CHECK(at_once.feed("x<tool_call>y") == "x");
  CHECK(at_once.held() == "<tool_call>y");
}

TEST_CASE("earlier calls and tool results are rendered the way the model calls tools") {
  const std::vector<tool_call> calls = {{"call_1", "get_weather", R"({"city": "Paris"})"}, {"call_2", "get_time", "not json"}};
  CHECK(render_tool_calls(calls) ==
        "<tool_call>\n{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Paris\"}}\n</tool_call>\n"
        "<tool_call>\n{\"name\":\"get_time\",\"arguments\":\"not json\"}\n</tool_call>");
  CHECK(render_tool_result("18 C") == "<tool_response>\n18 C\n</tool_response>");

  std::vector<chat_message> messages = {{"user", "hi"}};
  add_tool_instructions(messages, weather_tools(tool_mode::automatic));
  REQUIRE(messages.size() == 2);
  CHECK(messages[0].role == "system");
  CHECK(messages[0].content.find("<tools>\n{\"type\":\"function\",\"function\":{\"name\":\"get_weather\"") != std::string::npos);
  CHECK(messages[0].content.find("<tool_call>") != std::string::npos);
  std::vector<chat_message> with_system = {{"system", "Be brief."}, {"user", "hi"}};
  add_tool_instructions(with_system, weather_tools(tool_mode::automatic));
  REQUIRE(with_system.size() == 2);
  CHECK(with_system[0].content.rfind("Be brief.\n\n", 0) == 0);  // the client's system message comes first
}

TEST_CASE("request fields: tools and tool_choice resolve to a mode, a constraint and instructions") {
  const completion_request automatic = chat_request(tools_field);
  CHECK(automatic.tools.mode == tool_mode::automatic);  // tools without tool_choice: auto
  REQUIRE(automatic.tools.functions.size() == 1);
  CHECK(automatic.tools.functions[0].parameters == weather_parameters);
  CHECK_FALSE(automatic.params.constraint.active());
  REQUIRE(automatic.messages.size() == 2);
  CHECK(automatic.messages[0].content.find("get_weather") != std::string::npos);

  const completion_request none = chat_request(tools_field + R"(, "tool_choice": "none")");
  CHECK_FALSE(none.tools.active());
  CHECK(none.messages.size() == 1);  // the model is not told about the tools

  const completion_request required = chat_request(tools_field + R"(, "tool_choice": "required", "parallel_tool_calls": false)");
  CHECK(required.tools.mode == tool_mode::required);
  CHECK_FALSE(required.tools.parallel);
  CHECK(required.params.constraint.text.find("\"maxItems\": 1") != std::string::npos);

  const completion_request named =
      chat_request(tools_field + R"(, "tool_choice": {"type": "function", "function": {"name": "get_weather"}})");
  CHECK(named.tools.mode == tool_mode::named);
  CHECK(named.tools.named == "get_weather");
  CHECK(named.params.constraint.text == weather_parameters);

  CHECK(chat_request(R"("tools": null, "tool_choice": null)").tools.mode == tool_mode::none);
}

TEST_CASE("request fields: what cannot be honoured is a 400 naming the field") {
  CHECK(chat_error(R"("tools": {})").param == "tools");
  CHECK(chat_error(R"("tools": [{"type": "code_interpreter"}])").param == "tools");
  CHECK(chat_error(R"("tools": [{"type": "function", "function": {"name": "has space"}}])").param == "tools");
  CHECK(chat_error(R"("tools": [{"type": "function", "function": {"name": "f", "parameters": "{}"}}])").param == "tools");
  CHECK(chat_error(R"("tools": [{"type": "function", "function": {"name": "f"}}, {"type": "function", "function": {"name": "f"}}])")
            .message.find("two tools") != std::string::npos);
  CHECK(chat_error(R"("tool_choice": "required")").param == "tool_choice");  // no tools
  CHECK(chat_error(tools_field + R"(, "tool_choice": "sometimes")").param == "tool_choice");
  CHECK(chat_error(tools_field + R"(, "tool_choice": {"type": "function", "function": {"name": "get_time"}})")
            .message.find("get_time") != std::string::npos);
  CHECK(chat_error(tools_field + R"(, "parallel_tool_calls": "yes")").param == "parallel_tool_calls");
  // A required call's arguments are held to the schema, so its keywords must be ones the engine enforces.
  const api_error unenforced = chat_error(
      R"("tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"x": {"type": "string", "format": "phone"}}}}}], "tool_choice": "required")");
  CHECK(unenforced.param.find("tools[0].function.parameters") == 0);
  CHECK(unenforced.message.find("format") != std::string::npos);
  CHECK(chat_error(tools_field + R"(, "tool_choice": "required", "response_format": {"type": "json_object"})").param == "tool_choice");
  CHECK(chat_error(R"("functions": [])").param == "functions");
  CHECK(chat_error(R"("function_call": "auto")").param == "function_call");
  const parse_result on_completions = parse_request(endpoint::completions, R"({"prompt": "x", )" + tools_field + "}");
  REQUIRE(std::holds_alternative<api_error>(on_completions));
  CHECK(std::get<api_error>(on_completions).param == "tools");
}

TEST_CASE("request fields: an assistant turn's tool_calls and a tool result reach the template") {
  const parse_result result = parse_request(endpoint::chat_completions, R"({"messages": [
      {"role": "user", "content": "Weather in Paris?"},
      {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
        "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
      {"role": "tool", "tool_call_id": "call_1", "content": "18 C and sunny"}]})");
  if (const auto* error = std::get_if<api_error>(&result)) FAIL(error->message);
  const auto& messages = std::get<completion_request>(result).messages;
  REQUIRE(messages.size() == 3);
  CHECK(messages[1].role == "assistant");
  CHECK(messages[1].content == "<tool_call>\n{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Paris\"}}\n</tool_call>");
  CHECK(messages[2].role == "user");
  CHECK(messages[2].content == "<tool_response>\n18 C and sunny\n</tool_response>");

  const parse_result wrong_role = parse_request(endpoint::chat_completions,
      R"({"messages": [{"role": "user", "content": "x", "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]}]})");
  REQUIRE(std::holds_alternative<api_error>(wrong_role));
  CHECK(std::get<api_error>(wrong_role).param == "messages");
  const parse_result unnamed = parse_request(endpoint::chat_completions,
      R"({"messages": [{"role": "assistant", "tool_calls": [{"function": {"arguments": "{}"}}]}]})");
  REQUIRE(std::holds_alternative<api_error>(unnamed));
}
