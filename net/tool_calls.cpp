#include "tool_calls.hpp"

#include <simdjson.h>

#include "json_writer.hpp"

namespace inflight::net {

namespace {

constexpr std::string_view open_tag = "<tool_call>", close_tag = "</tool_call>";

std::string_view trim(std::string_view text) {
  const size_t first = text.find_first_not_of(" \t\r\n");
  if (first == std::string_view::npos) return {};
  return text.substr(first, text.find_last_not_of(" \t\r\n") - first + 1);
}

// {"name": NAME, "arguments": ARGUMENTS}, ARGUMENTS being JSON text (written as is when it parses as an
// object, else as a string: an earlier turn's arguments are the client's to get right).
void write_call_object(std::string& out, std::string_view name, std::string_view arguments) {
  thread_local simdjson::dom::parser parser;
  simdjson::dom::element parsed;
  const bool is_object = !parser.parse(arguments.data(), arguments.size()).get(parsed) && parsed.is_object();
  json_writer w(out);
  w.begin_object().key("name").value(name).key("arguments");
  if (is_object) w.raw(simdjson::minify(parsed));
  else w.value(arguments);
  w.end_object();
}

// One call object {"name": ..., "arguments": {...}} whose name is one of the functions, or nullopt.
std::optional<tool_call> read_call(const tool_spec& tools, simdjson::dom::element element,
                                   const std::function<std::string()>& new_id) {
  simdjson::dom::object object;
  std::string_view name;
  simdjson::dom::element arguments;
  if (element.get_object().get(object) || object["name"].get_string().get(name) ||
      object["arguments"].get(arguments) || !arguments.is_object())
    return std::nullopt;
  bool listed = false;
  for (const tool_function& function : tools.functions) listed = listed || function.name == name;
  if (!listed) return std::nullopt;
  return tool_call{new_id(), std::string(name), simdjson::minify(arguments)};
}

}  // namespace

void add_tool_instructions(std::vector<chat_message>& messages, const tool_spec& tools) {
  std::string text =
      "You can call functions to answer the user. The functions you may call are listed between <tools> and "
      "</tools>, one JSON object each:\n<tools>\n";
  for (const tool_function& function : tools.functions) {
    json_writer w(text);
    w.begin_object().key("type").value("function").key("function").begin_object();
    w.key("name").value(function.name);
    if (!function.description.empty()) w.key("description").value(function.description);
    w.key("parameters").raw(function.parameters).end_object().end_object();
    text += '\n';
  }
  text +=
      "</tools>\nTo call a function, write a JSON object with its name and its arguments between <tool_call> "
      "and </tool_call>, like this:\n<tool_call>\n{\"name\": \"function_name\", \"arguments\": {\"argument\": "
      "\"value\"}}\n</tool_call>\nThe results come back between <tool_response> and </tool_response>.";
  if (!messages.empty() && (messages.front().role == "system" || messages.front().role == "developer")) {
    messages.front().content += "\n\n" + text;
  } else {
    messages.insert(messages.begin(), chat_message{"system", "You are a helpful assistant.\n\n" + text});
  }
}

std::string render_tool_calls(std::span<const tool_call> calls) {
  std::string out;
  for (const tool_call& call : calls) {
    if (!out.empty()) out += '\n';
    out += std::string(open_tag) + "\n";
    write_call_object(out, call.name, call.arguments);
    out += "\n" + std::string(close_tag);
  }
  return out;
}

std::string render_tool_result(std::string_view content) {
  return "<tool_response>\n" + std::string(content) + "\n</tool_response>";
}

output_constraint tool_output_constraint(const tool_spec& tools) {
  if (tools.mode == tool_mode::named) {
    for (const tool_function& function : tools.functions)
      if (function.name == tools.named) return {output_constraint::kind::json_schema, function.parameters};
    return {};
  }
  if (tools.mode != tool_mode::required) return {};
  // [{"name": "f", "arguments": {...f's parameters...}} | ..., ...]
  std::string schema = R"({"type": "array", "minItems": 1, )";
  if (!tools.parallel) schema += R"("maxItems": 1, )";
  schema += R"("items": {"anyOf": [)";
  for (size_t i = 0; i < tools.functions.size(); ++i) {
    const tool_function& function = tools.functions[i];
    if (i) schema += ", ";
    schema += R"({"type": "object", "properties": {"name": {"const": )";
    append_json_string(schema, function.name);
    schema += R"(}, "arguments": )" + function.parameters + R"(}, "required": ["name", "arguments"]})";
  }
  schema += "]}}";
  return {output_constraint::kind::json_schema, schema};
}

std::optional<tool_output> parse_tool_output(const tool_spec& tools, std::string_view text,
                                             const std::function<std::string()>& new_id) {
  thread_local simdjson::dom::parser parser;
  simdjson::dom::element root;
  tool_output out;
  switch (tools.mode) {
    case tool_mode::none: return std::nullopt;
    case tool_mode::named: {
      if (parser.parse(text.data(), text.size()).get(root) || !root.is_object()) return std::nullopt;
      out.calls.push_back({new_id(), tools.named, simdjson::minify(root)});
      return out;
    }
    case tool_mode::required: {
      simdjson::dom::array calls;
      if (parser.parse(text.data(), text.size()).get(root) || root.get_array().get(calls)) return std::nullopt;
      for (const simdjson::dom::element call : calls) {
        auto parsed = read_call(tools, call, new_id);
        if (!parsed) return std::nullopt;
        out.calls.push_back(std::move(*parsed));
      }
      if (out.calls.empty()) return std::nullopt;
      return out;
    }
    case tool_mode::automatic: break;
  }
  // auto: every <tool_call> block must hold a call to a listed function; then the text around them is
  // the content. One malformed block and the whole output is an answer, not a call.
  std::string content;
  size_t at = 0;
  while (true) {
    const size_t open = text.find(open_tag, at);
    if (open == std::string_view::npos) {
      content.append(text.substr(at));
      break;
    }
    content.append(text.substr(at, open - at));
    const size_t body = open + open_tag.size();
    const size_t close = text.find(close_tag, body);
    // A last block the model did not close (it ended there) is taken as far as it got.
    const std::string_view block = trim(text.substr(body, close == std::string_view::npos ? std::string_view::npos : close - body));
    if (parser.parse(block.data(), block.size()).get(root)) return std::nullopt;
    auto call = read_call(tools, root, new_id);
    if (!call) return std::nullopt;
    out.calls.push_back(std::move(*call));
    if (close == std::string_view::npos) break;
    at = close + close_tag.size();
  }
  if (out.calls.empty()) return std::nullopt;
  if (!tools.parallel) out.calls.resize(1);
  out.content = std::string(trim(content));
  return out;
}

std::string tool_text_splitter::feed(std::string_view text) {
  held_.append(text);
  if (capturing_) return {};
  if (const size_t open = held_.find(open_tag); open != std::string::npos) {
    capturing_ = true;
    std::string ready = held_.substr(0, open);
    held_.erase(0, open);
    return ready;
  }
  // Hold back the longest tail that could still become "<tool_call>".
  size_t keep = 0;
  for (size_t n = std::min(held_.size(), open_tag.size() - 1); n > 0; --n) {
    if (std::string_view(held_).substr(held_.size() - n) == open_tag.substr(0, n)) {
      keep = n;
      break;
    }
  }
  std::string ready = held_.substr(0, held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  return ready;
}

}  // namespace inflight::net
