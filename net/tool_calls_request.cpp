#include "tool_calls_request.hpp"

#include <algorithm>
#include <cctype>

#include "request_json.hpp"
#include "structured_output_request.hpp"

namespace inflight::net {

using simdjson::ondemand::json_type;
using simdjson::ondemand::value;

// An assistant message's tool_calls: [{"id", "type": "function", "function": {"name", "arguments"}}]
std::optional<api_error> read_message_tool_calls(value& v, std::vector<tool_call>& out) {
  if (type_of(v) == json_type::null) return std::nullopt;
  simdjson::ondemand::array calls;
  if (v.get_array().get(calls)) return bad("messages", "a message's 'tool_calls' must be an array");
  for (auto element : calls) {
    simdjson::ondemand::object call;
    if (element.get_object().get(call)) return bad("messages", "each of 'tool_calls' must be an object");
    tool_call parsed;
    auto error = for_each_member(call, "messages", [&](std::string_view key, value& item) -> std::optional<api_error> {
      if (key == "id") return read_string(item, "messages", parsed.id);
      if (key != "function") return std::nullopt;
      simdjson::ondemand::object function;
      if (item.get_object().get(function)) return bad("messages", "a tool call's 'function' must be an object");
      return for_each_member(function, "messages", [&](std::string_view name, value& member) -> std::optional<api_error> {
        if (name == "name" && read_string(member, "messages", parsed.name))
          return bad("messages", "a tool call's function 'name' must be a string");
        if (name == "arguments" && read_string(member, "messages", parsed.arguments))
          return bad("messages", "a tool call's 'arguments' must be a string holding JSON");
        return std::nullopt;
      });
    });
    if (error) return error;
    if (parsed.name.empty()) return bad("messages", "each of 'tool_calls' needs a function name");
    out.push_back(std::move(parsed));
  }
  return std::nullopt;
}

// tools: [{"type": "function", "function": {"name", "description", "parameters", "strict"}}]
std::optional<api_error> read_tools(value& v, std::vector<tool_function>& out) {
  if (type_of(v) == json_type::null) return std::nullopt;
  simdjson::ondemand::array tools;
  if (v.get_array().get(tools)) return wrong_type("tools", "an array of tools");
  for (auto element : tools) {
    simdjson::ondemand::object tool;
    if (element.get_object().get(tool)) return bad("tools", "each tool must be an object");
    tool_function parsed;
    std::string type;
    auto error = for_each_member(tool, "tools", [&](std::string_view key, value& item) -> std::optional<api_error> {
      if (key == "type") return read_string(item, "tools", type);
      if (key != "function") return std::nullopt;
      simdjson::ondemand::object function;
      if (item.get_object().get(function)) return bad("tools", "a tool's 'function' must be an object");
      return for_each_member(function, "tools", [&](std::string_view name, value& member) -> std::optional<api_error> {
        if (name == "name") return read_string(member, "tools", parsed.name);
        if (name == "description") return read_string(member, "tools", parsed.description);
        if (name == "parameters") {
          simdjson::ondemand::object parameters;
          std::string_view text;
          if (member.get_object().get(parameters) || parameters.raw_json().get(text))
            return bad("tools", "a function's 'parameters' must be a JSON Schema object");
          parsed.parameters.assign(text);
        }
        return std::nullopt;  // strict: the arguments are always held to the schema when a call is required
      });
    });
    if (error) return error;
    if (type != "function") return bad("tools", "only tools of type 'function' are supported");
    const bool valid_name = !parsed.name.empty() && parsed.name.size() <= 64 &&
                            std::all_of(parsed.name.begin(), parsed.name.end(), [](char c) {
                              return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
                            });
    if (!valid_name) return bad("tools", "a function's 'name' must be 1 to 64 letters, digits, '_' or '-'");
    for (const tool_function& earlier : out)
      if (earlier.name == parsed.name) return bad("tools", "two tools are named '" + parsed.name + "'");
    out.push_back(std::move(parsed));
  }
  return std::nullopt;
}

// tool_choice: "none" | "auto" | "required" | {"type": "function", "function": {"name": NAME}}
std::optional<api_error> read_tool_choice(value& v, std::optional<std::string>& out) {
  const auto type = type_of(v);
  if (type == json_type::null) return std::nullopt;
  if (type == json_type::string) {
    std::string choice;
    if (auto error = read_string(v, "tool_choice", choice)) return error;
    if (choice != "none" && choice != "auto" && choice != "required")
      return bad("tool_choice", "'tool_choice' must be 'none', 'auto', 'required' or a function");
    out = choice;
    return std::nullopt;
  }
  simdjson::ondemand::object object;
  if (v.get_object().get(object)) return wrong_type("tool_choice", "a string or an object");
  std::string name;
  auto error = for_each_member(object, "tool_choice", [&](std::string_view key, value& item) -> std::optional<api_error> {
    if (key != "function") return std::nullopt;
    simdjson::ondemand::object function;
    std::string_view text;
    if (item.get_object().get(function) || function["name"].get_string().get(text))
      return bad("tool_choice", "'tool_choice' must name a function: {\"type\": \"function\", \"function\": {\"name\": ...}}");
    name.assign(text);
    return std::nullopt;
  });
  if (error) return error;
  if (name.empty()) return bad("tool_choice", "'tool_choice' must name a function");
  out = "function:" + name;
  return std::nullopt;
}

// Tools resolved after every field is read: the mode, the checks, the instructions in the messages, and
// the constraint of a required call.
std::optional<api_error> finish_tools(endpoint kind, const tool_fields& raw, completion_request& out) {
  tool_spec& tools = out.tools;
  if (!raw.has_tools && !raw.tool_choice) return std::nullopt;
  if (kind != endpoint::chat_completions) return bad("tools", "tools are supported on /v1/chat/completions only");
  const std::string choice = raw.tool_choice.value_or(tools.functions.empty() ? "none" : "auto");
  if (choice == "none") {
    tools.mode = tool_mode::none;
    return std::nullopt;
  }
  if (tools.functions.empty()) return bad("tool_choice", "'tool_choice' needs 'tools'");
  if (choice == "auto") {
    tools.mode = tool_mode::automatic;
  } else if (choice == "required") {
    tools.mode = tool_mode::required;
  } else {
    tools.mode = tool_mode::named;
    tools.named = choice.substr(std::string_view("function:").size());
    const bool listed = std::any_of(tools.functions.begin(), tools.functions.end(),
                                    [&](const tool_function& f) { return f.name == tools.named; });
    if (!listed) return bad("tool_choice", "'tool_choice' names '" + tools.named + "', which is not in 'tools'");
  }
  if (tools.mode == tool_mode::required || tools.mode == tool_mode::named) {
    // The arguments are held to the functions' parameter schemas: each must be one the engine enforces.
    for (size_t i = 0; i < tools.functions.size(); ++i) {
      if (tools.mode == tool_mode::named && tools.functions[i].name != tools.named) continue;
      if (auto error = check_json_schema(tools.functions[i].parameters, "tools[" + std::to_string(i) + "].function.parameters"))
        return error;
    }
    if (out.params.constraint.active())
      return bad("tool_choice", "a required or named tool call cannot be combined with another output constraint");
    out.params.constraint = tool_output_constraint(tools);
  }
  add_tool_instructions(out.messages, tools);
  return std::nullopt;
}

}  // namespace inflight::net
