// One pass over the body's top-level object with simdjson On-Demand: each known key is read with the type
// it must have, anything else is skipped unread. Range checks come after the pass, so that a request
// listing, say, temperature before n gets the same answer as the other way round.
#include "openai_request.hpp"

#include <simdjson.h>

#include "structured_output_request.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <limits>
#include <optional>

namespace inflight::net {

namespace {

using simdjson::ondemand::json_type;
using simdjson::ondemand::value;

api_error bad(std::string param, std::string message) {
  api_error error;
  error.param = std::move(param);
  error.message = std::move(message);
  return error;
}

api_error wrong_type(const std::string& key, const char* expected) {
  return bad(key, "'" + key + "' must be " + expected);
}

// The value's JSON type, or nullopt when the document is malformed at that point.
std::optional<json_type> type_of(value& v) {
  json_type type;
  if (v.type().get(type)) return std::nullopt;
  return type;
}

// Readers: return an error for a value of the wrong type; leave `out` untouched for null.
std::optional<api_error> read_number(value& v, const std::string& key, std::optional<double>& out) {
  const auto type = type_of(v);
  if (type == json_type::null) return std::nullopt;
  double number = 0;
  if (type != json_type::number || v.get_double().get(number) || !std::isfinite(number))
    return wrong_type(key, "a number");
  out = number;
  return std::nullopt;
}

std::optional<api_error> read_integer(value& v, const std::string& key, std::optional<int64_t>& out) {
  const auto type = type_of(v);
  if (type == json_type::null) return std::nullopt;
  int64_t number = 0;
  if (type != json_type::number || v.get_int64().get(number)) return wrong_type(key, "an integer");
  out = number;
  return std::nullopt;
}

std::optional<api_error> read_bool(value& v, const std::string& key, bool& out) {
  const auto type = type_of(v);
  if (type == json_type::null) return std::nullopt;
  if (type != json_type::boolean || v.get_bool().get(out)) return wrong_type(key, "a boolean");
  return std::nullopt;
}

std::optional<api_error> read_string(value& v, const std::string& key, std::string& out) {
  const auto type = type_of(v);
  if (type == json_type::null) return std::nullopt;
  std::string_view text;
  if (type != json_type::string || v.get_string().get(text)) return wrong_type(key, "a string");
  out.assign(text);
  return std::nullopt;
}

std::optional<api_error> read_token_ids(simdjson::ondemand::array array, const std::string& key,
                                        std::vector<int32_t>& out) {
  for (auto element : array) {
    value item;
    int64_t id = 0;
    if (element.get(item) || type_of(item) != json_type::number || item.get_int64().get(id) || id < 0 ||
        id > std::numeric_limits<int32_t>::max())
      return bad(key, "'" + key + "' token ids must be non-negative integers");
    out.push_back(int32_t(id));
  }
  return std::nullopt;
}

// prompt: "text" | ["text", ...] | [id, ...] | [[id, ...], ...]
std::optional<api_error> read_prompt(value& v, completion_request& out) {
  const auto type = type_of(v);
  if (type == json_type::string) {
    out.prompt_texts.emplace_back();
    return read_string(v, "prompt", out.prompt_texts.back());
  }
  simdjson::ondemand::array array;
  if (type != json_type::array || v.get_array().get(array))
    return wrong_type("prompt", "a string, an array of strings, or an array of token ids");
  std::vector<int32_t> flat_ids;
  for (auto element : array) {
    value item;
    if (element.get(item)) return bad("prompt", "'prompt' is not valid JSON");
    const auto item_type = type_of(item);
    if (item_type == json_type::string) {
      if (!flat_ids.empty()) return bad("prompt", "'prompt' mixes strings and token ids");
      out.prompt_texts.emplace_back();
      if (auto error = read_string(item, "prompt", out.prompt_texts.back())) return error;
    } else if (item_type == json_type::number) {
      if (!out.prompt_texts.empty() || !out.prompt_tokens.empty())
        return bad("prompt", "'prompt' mixes strings and token ids");
      int64_t id = 0;
      if (item.get_int64().get(id) || id < 0 || id > std::numeric_limits<int32_t>::max())
        return bad("prompt", "'prompt' token ids must be non-negative integers");
      flat_ids.push_back(int32_t(id));
    } else if (item_type == json_type::array) {
      if (!out.prompt_texts.empty() || !flat_ids.empty()) return bad("prompt", "'prompt' mixes strings and token ids");
      simdjson::ondemand::array ids;
      if (item.get_array().get(ids)) return bad("prompt", "'prompt' is not valid JSON");
      out.prompt_tokens.emplace_back();
      if (auto error = read_token_ids(ids, "prompt", out.prompt_tokens.back())) return error;
    } else {
      return wrong_type("prompt", "a string, an array of strings, or an array of token ids");
    }
  }
  if (!flat_ids.empty()) out.prompt_tokens.push_back(std::move(flat_ids));
  return std::nullopt;
}

// content: "text" | [{"type": "text", "text": "..."}, ...] | null
std::optional<api_error> read_content(value& v, std::string& out) {
  const auto type = type_of(v);
  if (type == json_type::null) return std::nullopt;
  if (type == json_type::string) return read_string(v, "messages", out);
  simdjson::ondemand::array parts;
  if (type != json_type::array || v.get_array().get(parts))
    return bad("messages", "a message's 'content' must be a string or an array of text parts");
  for (auto element : parts) {
    simdjson::ondemand::object part;
    if (element.get_object().get(part)) return bad("messages", "a content part must be an object");
    std::string part_type, text;
    for (auto field : part) {
      std::string_view key;
      value item;
      if (field.unescaped_key().get(key) || field.value().get(item)) return bad("messages", "'messages' is not valid JSON");
      if (key == "type") {
        if (auto error = read_string(item, "messages", part_type)) return error;
      } else if (key == "text") {
        if (auto error = read_string(item, "messages", text)) return error;
      }
    }
    if (part_type != "text") return bad("messages", "only content parts of type 'text' are supported");
    out += text;
  }
  return std::nullopt;
}

// An assistant message's tool_calls: [{"id", "type": "function", "function": {"name", "arguments"}}]
std::optional<api_error> read_message_tool_calls(value& v, std::vector<tool_call>& out) {
  if (type_of(v) == json_type::null) return std::nullopt;
  simdjson::ondemand::array calls;
  if (v.get_array().get(calls)) return bad("messages", "a message's 'tool_calls' must be an array");
  for (auto element : calls) {
    simdjson::ondemand::object call;
    if (element.get_object().get(call)) return bad("messages", "each of 'tool_calls' must be an object");
    tool_call parsed;
    for (auto field : call) {
      std::string_view key;
      value item;
      if (field.unescaped_key().get(key) || field.value().get(item)) return bad("messages", "'messages' is not valid JSON");
      if (key == "id") {
        if (auto error = read_string(item, "messages", parsed.id)) return error;
      } else if (key == "function") {
        simdjson::ondemand::object function;
        if (item.get_object().get(function)) return bad("messages", "a tool call's 'function' must be an object");
        for (auto member : function) {
          std::string_view name;
          value member_value;
          if (member.unescaped_key().get(name) || member.value().get(member_value))
            return bad("messages", "'messages' is not valid JSON");
          if (name == "name" && read_string(member_value, "messages", parsed.name))
            return bad("messages", "a tool call's function 'name' must be a string");
          if (name == "arguments" && read_string(member_value, "messages", parsed.arguments))
            return bad("messages", "a tool call's 'arguments' must be a string holding JSON");
        }
      }
    }
    if (parsed.name.empty()) return bad("messages", "each of 'tool_calls' needs a function name");
    out.push_back(std::move(parsed));
  }
  return std::nullopt;
}

std::optional<api_error> read_messages(value& v, std::vector<chat_message>& out) {
  simdjson::ondemand::array array;
  if (type_of(v) != json_type::array || v.get_array().get(array)) return wrong_type("messages", "an array of messages");
  for (auto element : array) {
    simdjson::ondemand::object message;
    if (element.get_object().get(message)) return bad("messages", "each message must be an object");
    chat_message parsed;
    std::vector<tool_call> calls;
    bool has_role = false;
    for (auto field : message) {
      std::string_view key;
      value item;
      if (field.unescaped_key().get(key) || field.value().get(item)) return bad("messages", "'messages' is not valid JSON");
      if (key == "role") {
        if (auto error = read_string(item, "messages", parsed.role)) return error;
        has_role = true;
      } else if (key == "content") {
        if (auto error = read_content(item, parsed.content)) return error;
      } else if (key == "tool_calls") {
        if (auto error = read_message_tool_calls(item, calls)) return error;
      }
    }
    if (!has_role || parsed.role.empty()) return bad("messages", "each message needs a 'role'");
    if (parsed.role != "system" && parsed.role != "user" && parsed.role != "assistant" && parsed.role != "developer" &&
        parsed.role != "tool")
      return bad("messages", "unknown message role '" + parsed.role + "'");
    // The model reads earlier calls and tool results in the format it calls tools in (tool_calls.hpp).
    if (!calls.empty()) {
      if (parsed.role != "assistant") return bad("messages", "only assistant messages have 'tool_calls'");
      parsed.content += (parsed.content.empty() ? "" : "\n") + render_tool_calls(calls);
    }
    if (parsed.role == "tool") parsed = {"user", render_tool_result(parsed.content)};
    out.push_back(std::move(parsed));
  }
  return std::nullopt;
}

std::optional<api_error> read_stop(value& v, std::vector<std::string>& out) {
  const auto type = type_of(v);
  if (type == json_type::null) return std::nullopt;
  if (type == json_type::string) {
    out.emplace_back();
    return read_string(v, "stop", out.back());
  }
  simdjson::ondemand::array array;
  if (type != json_type::array || v.get_array().get(array)) return wrong_type("stop", "a string or an array of strings");
  for (auto element : array) {
    value item;
    if (element.get(item)) return bad("stop", "'stop' is not valid JSON");
    out.emplace_back();
    if (auto error = read_string(item, "stop", out.back())) return error;
  }
  return std::nullopt;
}

// Everything read from the body before the range checks.
struct raw_fields {
  std::optional<int64_t> max_tokens, n, top_k, seed, logprobs_count, top_logprobs;
  std::optional<double> temperature, top_p, min_p, presence_penalty, frequency_penalty, repetition_penalty;
  bool logprobs_flag = false;
  bool has_prompt = false, has_messages = false;
  bool has_tools = false;
  std::optional<std::string> tool_choice;  // "none" | "auto" | "required" | "function:NAME"
};

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
    for (auto field : tool) {
      std::string_view key;
      value item;
      if (field.unescaped_key().get(key) || field.value().get(item)) return bad("tools", "'tools' is not valid JSON");
      if (key == "type") {
        if (auto error = read_string(item, "tools", type)) return error;
      } else if (key == "function") {
        simdjson::ondemand::object function;
        if (item.get_object().get(function)) return bad("tools", "a tool's 'function' must be an object");
        for (auto member : function) {
          std::string_view name;
          value member_value;
          if (member.unescaped_key().get(name) || member.value().get(member_value)) return bad("tools", "'tools' is not valid JSON");
          if (name == "name") {
            if (auto error = read_string(member_value, "tools", parsed.name)) return error;
          } else if (name == "description") {
            if (auto error = read_string(member_value, "tools", parsed.description)) return error;
          } else if (name == "parameters") {
            simdjson::ondemand::object parameters;
            std::string_view text;
            if (member_value.get_object().get(parameters) || parameters.raw_json().get(text))
              return bad("tools", "a function's 'parameters' must be a JSON Schema object");
            parsed.parameters.assign(text);
          }  // strict: the arguments are always held to the schema when a call is required
        }
      }
    }
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
  for (auto field : object) {
    std::string_view key;
    value item;
    if (field.unescaped_key().get(key) || field.value().get(item)) return bad("tool_choice", "'tool_choice' is not valid JSON");
    if (key != "function") continue;
    simdjson::ondemand::object function;
    std::string_view text;
    if (item.get_object().get(function) || function["name"].get_string().get(text))
      return bad("tool_choice", "'tool_choice' must name a function: {\"type\": \"function\", \"function\": {\"name\": ...}}");
    name.assign(text);
  }
  if (name.empty()) return bad("tool_choice", "'tool_choice' must name a function");
  out = "function:" + name;
  return std::nullopt;
}

// Tools resolved after every field is read: the mode, the checks, the instructions in the messages, and
// the constraint of a required call.
std::optional<api_error> finish_tools(endpoint kind, raw_fields& raw, completion_request& out) {
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

std::optional<api_error> read_field(endpoint kind, std::string_view key, value& v, completion_request& out,
                                    raw_fields& raw) {
  const std::string name(key);
  if (key == "model") return read_string(v, name, out.model);
  if (key == "prompt" && kind == endpoint::completions) {
    raw.has_prompt = true;
    return read_prompt(v, out);
  }
  if (key == "messages" && kind == endpoint::chat_completions) {
    raw.has_messages = true;
    return read_messages(v, out.messages);
  }
  if (key == "max_tokens" || key == "max_completion_tokens") return read_integer(v, name, raw.max_tokens);
  if (key == "n") return read_integer(v, name, raw.n);
  if (key == "top_k") return read_integer(v, name, raw.top_k);
  if (key == "seed") return read_integer(v, name, raw.seed);
  if (key == "temperature") return read_number(v, name, raw.temperature);
  if (key == "top_p") return read_number(v, name, raw.top_p);
  if (key == "min_p") return read_number(v, name, raw.min_p);
  if (key == "presence_penalty") return read_number(v, name, raw.presence_penalty);
  if (key == "frequency_penalty") return read_number(v, name, raw.frequency_penalty);
  if (key == "repetition_penalty") return read_number(v, name, raw.repetition_penalty);
  if (key == "stop") return read_stop(v, out.params.stop);
  if (key == "ignore_eos") return read_bool(v, name, out.params.ignore_eos);
  if (key == "stream") return read_bool(v, name, out.stream);
  if (key == "user") return read_string(v, name, out.user);
  if (key == "tools") {
    raw.has_tools = true;
    return read_tools(v, out.tools.functions);
  }
  if (key == "tool_choice") return read_tool_choice(v, raw.tool_choice);
  if (key == "parallel_tool_calls") return read_bool(v, name, out.tools.parallel);
  if (key == "functions" || key == "function_call")
    return bad(name, "'" + name + "' is OpenAI's deprecated form of tools; use 'tools' and 'tool_choice'");
  if (is_structured_output_field(key)) return read_structured_output_field(key, v, out.params.constraint);
  if (key == "top_logprobs") return read_integer(v, name, raw.top_logprobs);
  if (key == "logprobs") {
    // Completions: how many alternatives (0..5); chat: a flag, with top_logprobs for the count.
    if (kind == endpoint::completions) return read_integer(v, name, raw.logprobs_count);
    return read_bool(v, name, raw.logprobs_flag);
  }
  if (key == "stream_options") {
    if (type_of(v) == json_type::null) return std::nullopt;
    simdjson::ondemand::object options;
    if (v.get_object().get(options)) return wrong_type(name, "an object");
    for (auto field : options) {
      std::string_view option;
      value item;
      if (field.unescaped_key().get(option) || field.value().get(item)) return bad(name, "'stream_options' is not valid JSON");
      if (option == "include_usage")
        if (auto error = read_bool(item, "stream_options.include_usage", out.include_usage)) return error;
    }
    return std::nullopt;
  }
  return std::nullopt;  // unknown: ignored, as OpenAI-compatible servers do
}

// Range checks and defaults, after every field is read.
std::optional<api_error> finish(endpoint kind, raw_fields& raw, completion_request& out, const request_limits& limits) {
  if (kind == endpoint::completions) {
    if (!raw.has_prompt) return bad("prompt", "'prompt' is required");
    const size_t prompts = out.prompt_texts.size() + out.prompt_tokens.size();
    if (prompts == 0) return bad("prompt", "'prompt' is empty");
    if (prompts > size_t(limits.max_prompts))
      return bad("prompt", "at most " + std::to_string(limits.max_prompts) + " prompts per request");
    for (const std::string& text : out.prompt_texts)
      if (text.empty()) return bad("prompt", "'prompt' is empty");
    for (const auto& ids : out.prompt_tokens)
      if (ids.empty()) return bad("prompt", "'prompt' is empty");
  } else {
    if (!raw.has_messages || out.messages.empty()) return bad("messages", "'messages' must hold at least one message");
  }

  if (raw.max_tokens && *raw.max_tokens < 1) return bad("max_tokens", "'max_tokens' must be at least 1");
  if (raw.max_tokens && *raw.max_tokens > std::numeric_limits<int32_t>::max())
    return bad("max_tokens", "'max_tokens' is too large");
  out.params.max_tokens = raw.max_tokens ? int32_t(*raw.max_tokens) : limits.default_max_tokens;
  if (raw.n && (*raw.n < 1 || *raw.n > limits.max_n))
    return bad("n", "'n' must be between 1 and " + std::to_string(limits.max_n));
  out.n = raw.n ? int32_t(*raw.n) : 1;
  if (out.params.stop.size() > size_t(limits.max_stop))
    return bad("stop", "at most " + std::to_string(limits.max_stop) + " stop strings");
  for (const std::string& stop : out.params.stop)
    if (stop.empty()) return bad("stop", "stop strings must not be empty");

  sampling_params& sampling = out.params.sampling;
  if (raw.temperature) sampling.temperature = float(*raw.temperature);
  if (raw.top_p) sampling.top_p = float(*raw.top_p);
  if (raw.min_p) sampling.min_p = float(*raw.min_p);
  if (raw.presence_penalty) sampling.presence_penalty = float(*raw.presence_penalty);
  if (raw.frequency_penalty) sampling.frequency_penalty = float(*raw.frequency_penalty);
  if (raw.repetition_penalty) sampling.repetition_penalty = float(*raw.repetition_penalty);
  if (raw.top_k) {
    if (*raw.top_k < -1 || *raw.top_k > std::numeric_limits<int32_t>::max()) return bad("top_k", "'top_k' must be >= -1");
    sampling.top_k = int32_t(*raw.top_k);
  }
  if (raw.seed) sampling.seed = uint64_t(*raw.seed);
  if (kind == endpoint::completions) {
    if (raw.logprobs_count && (*raw.logprobs_count < 0 || *raw.logprobs_count > 5))
      return bad("logprobs", "'logprobs' must be between 0 and 5");
    if (raw.logprobs_count) {
      sampling.logprobs = true;
      sampling.top_logprobs = int32_t(*raw.logprobs_count);
    }
  } else {
    sampling.logprobs = raw.logprobs_flag;
    if (raw.top_logprobs) {
      if (*raw.top_logprobs < 0 || *raw.top_logprobs > max_top_logprobs)
        return bad("top_logprobs", "'top_logprobs' must be between 0 and " + std::to_string(max_top_logprobs));
      if (!raw.logprobs_flag) return bad("top_logprobs", "'top_logprobs' needs 'logprobs': true");
      sampling.top_logprobs = int32_t(*raw.top_logprobs);
    }
  }
  // The sampling library's own rules; its messages start with the field's name.
  if (const std::string message = validate(sampling); !message.empty())
    return bad(message.substr(0, message.find(' ')), message);
  return finish_tools(kind, raw, out);
}

// Calls on_field(key, value) for each member of the body's top-level object; the first error wins.
template <class OnField>
std::optional<api_error> for_each_field(std::string_view body, OnField on_field) {
  thread_local simdjson::ondemand::parser parser;  // parsers are reusable but not thread-safe
  const simdjson::padded_string json(body);
  simdjson::ondemand::document document;
  simdjson::ondemand::object object;
  if (auto error = parser.iterate(json).get(document))
    return bad("", std::string("invalid JSON: ") + simdjson::error_message(error));
  if (auto error = document.get_object().get(object)) {
    return bad("", error == simdjson::INCORRECT_TYPE ? std::string("the request body must be a JSON object")
                                                     : std::string("invalid JSON: ") + simdjson::error_message(error));
  }
  for (auto field : object) {
    std::string_view key;
    value v;
    if (auto error = field.unescaped_key().get(key))
      return bad("", std::string("invalid JSON: ") + simdjson::error_message(error));
    if (auto error = field.value().get(v)) return bad("", std::string("invalid JSON: ") + simdjson::error_message(error));
    if (auto problem = on_field(key, v)) return problem;
  }
  // The object must be the whole document, and well-formed to its end (On-Demand reads lazily).
  // (current_location() succeeds only while there is something left to read.)
  const char* rest = nullptr;
  if (document.current_location().get(rest) == simdjson::SUCCESS)
    return bad("", "invalid JSON: trailing content after the request object");
  return std::nullopt;
}

}  // namespace

parse_result parse_request(endpoint kind, std::string_view body, const request_limits& limits) {
  completion_request out;
  out.kind = kind;
  raw_fields raw;
  if (auto problem = for_each_field(body, [&](std::string_view key, value& v) { return read_field(kind, key, v, out, raw); }))
    return *problem;
  if (auto problem = finish(kind, raw, out, limits)) return *problem;
  return out;
}

std::variant<ws_envelope, api_error> parse_ws_envelope(std::string_view body) {
  ws_envelope out;
  std::string type;
  bool has_messages = false;
  auto problem = for_each_field(body, [&](std::string_view key, value& v) -> std::optional<api_error> {
    if (key == "type") return read_string(v, "type", type);
    if (key == "messages") has_messages = true;
    if (key != "id") return std::nullopt;
    const auto id_type = type_of(v);
    if (id_type != json_type::string && id_type != json_type::number) return wrong_type("id", "a string or a number");
    std::string_view raw = v.raw_json_token();
    if (id_type == json_type::string) {  // validated, so that the echo is valid JSON
      std::string_view text;
      if (v.get_string().get(text)) return wrong_type("id", "a string or a number");
    }
    while (!raw.empty() && (raw.back() == ' ' || raw.back() == '\n' || raw.back() == '\t' || raw.back() == '\r'))
      raw.remove_suffix(1);  // the raw token runs up to the next structural character
    out.id_json.assign(raw);
    return std::nullopt;
  });
  if (problem) return *problem;
  if (out.id_json.empty()) return bad("id", "'id' is required");
  if (type == "cancel") out.type = ws_envelope::kind::cancel;
  else if (type == "chat" || (type.empty() && has_messages)) out.type = ws_envelope::kind::chat;
  else if (type == "completion" || type.empty()) out.type = ws_envelope::kind::completion;
  else return bad("type", "'type' must be 'completion', 'chat' or 'cancel'");
  return out;
}

std::variant<tokenize_request, api_error> parse_tokenize_request(std::string_view body) {
  tokenize_request out;
  bool has_prompt = false;
  auto problem = for_each_field(body, [&](std::string_view key, value& v) -> std::optional<api_error> {
    if (key != "prompt") return std::nullopt;
    has_prompt = true;
    return read_string(v, "prompt", out.prompt);
  });
  if (problem) return *problem;
  if (!has_prompt) return bad("prompt", "'prompt' is required");
  return out;
}

std::variant<detokenize_request, api_error> parse_detokenize_request(std::string_view body) {
  detokenize_request out;
  bool has_tokens = false;
  auto problem = for_each_field(body, [&](std::string_view key, value& v) -> std::optional<api_error> {
    if (key != "tokens") return std::nullopt;
    has_tokens = true;
    simdjson::ondemand::array array;
    if (type_of(v) != json_type::array || v.get_array().get(array)) return wrong_type("tokens", "an array of token ids");
    return read_token_ids(array, "tokens", out.tokens);
  });
  if (problem) return *problem;
  if (!has_tokens) return bad("tokens", "'tokens' is required");
  return out;
}

}  // namespace inflight::net
