// One pass over the body's top-level object with simdjson On-Demand: each known key is read with the type
// it must have, anything else is skipped unread. Range checks come after the pass, so that a request
// listing, say, temperature before n gets the same answer as the other way round.
#include "openai_request.hpp"

#include <simdjson.h>

#include "request_field_policy.hpp"
#include "request_json.hpp"
#include "structured_output_request.hpp"
#include "tool_calls_request.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <optional>

namespace inflight::net {

namespace {

using simdjson::ondemand::json_type;
using simdjson::ondemand::value;

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
  tool_fields tools;
  std::optional<int64_t> max_completion_tokens, best_of;
  bool has_stream_options = false;
};

// logit_bias: {"token id": bias, ...}, OpenAI's form (the ids as strings); a repeated id takes the last value.
std::optional<api_error> read_logit_bias(value& v, std::vector<std::pair<int32_t, float>>& out) {
  if (type_of(v) == json_type::null) return std::nullopt;
  simdjson::ondemand::object object;
  if (v.get_object().get(object)) return wrong_type("logit_bias", "an object mapping token ids to biases");
  for (auto field : object) {
    std::string_view key;
    value item;
    if (field.unescaped_key().get(key) || field.value().get(item)) return bad("logit_bias", "'logit_bias' is not valid JSON");
    int32_t token = -1;
    const auto [end, error] = std::from_chars(key.data(), key.data() + key.size(), token);
    if (error != std::errc() || end != key.data() + key.size() || token < 0)
      return bad("logit_bias", "'logit_bias' keys must be token ids (e.g. \"42\"), got '" + std::string(key) + "'");
    double bias = 0;
    if (type_of(item) != json_type::number || item.get_double().get(bias))
      return bad("logit_bias", "'logit_bias' values must be numbers in [-100, 100]");
    if (out.size() == sampling_params::max_logit_bias)
      return bad("logit_bias", "'logit_bias' may hold at most " + std::to_string(sampling_params::max_logit_bias) + " tokens");
    out.emplace_back(token, float(bias));
  }
  // One entry per id, the last one given (a stable sort keeps each id's entries in the order given).
  std::stable_sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<std::pair<int32_t, float>> distinct;
  for (size_t i = 0; i < out.size(); ++i)
    if (i + 1 == out.size() || out[i + 1].first != out[i].first) distinct.push_back(out[i]);
  out = std::move(distinct);
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
  if (key == "max_tokens") return read_integer(v, name, raw.max_tokens);
  if (key == "max_completion_tokens") return read_integer(v, name, raw.max_completion_tokens);
  if (key == "best_of") return read_integer(v, name, raw.best_of);
  if (key == "logit_bias") return read_logit_bias(v, out.params.sampling.logit_bias);
  if (key == "echo") {
    if (auto error = read_bool(v, name, out.echo)) return error;
    if (out.echo && kind != endpoint::completions) return bad(name, "'echo' is supported on /v1/completions only");
    return std::nullopt;
  }
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
  if (key == "skip_special_tokens") return read_bool(v, name, out.params.skip_special_tokens);
  if (key == "stream") return read_bool(v, name, out.stream);
  if (key == "user") return read_string(v, name, out.user);
  if (key == "tools") {
    raw.tools.has_tools = true;
    return read_tools(v, out.tools.functions);
  }
  if (key == "tool_choice") return read_tool_choice(v, raw.tools.tool_choice);
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
    raw.has_stream_options = true;
    simdjson::ondemand::object options;
    if (v.get_object().get(options)) return wrong_type(name, "an object");
    return for_each_member(options, name, [&](std::string_view option, value& item) -> std::optional<api_error> {
      const std::string option_name = "stream_options." + std::string(option);
      if (option != "include_usage") return bad(option_name, "'" + option_name + "' is not supported (only include_usage)");
      return read_bool(item, option_name, out.include_usage);
    });
  }
  // What would change the answer and is not honoured is refused (request_field_policy.hpp); the rest of
  // the fields nobody here reads are ignored, as OpenAI-compatible servers do.
  bool listed = false;
  return check_unhonoured_field(key, v, listed);
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

  if (raw.max_completion_tokens) {
    // OpenAI's newer name; both may be sent by a client that fills in either, as long as they agree.
    if (raw.max_tokens && *raw.max_tokens != *raw.max_completion_tokens)
      return bad("max_completion_tokens", "'max_tokens' and 'max_completion_tokens' differ; give one of them");
    raw.max_tokens = raw.max_completion_tokens;
  }
  if (raw.max_tokens && *raw.max_tokens < 1) return bad("max_tokens", "'max_tokens' must be at least 1");
  if (raw.max_tokens && *raw.max_tokens > std::numeric_limits<int32_t>::max())
    return bad("max_tokens", "'max_tokens' is too large");
  out.params.max_tokens = raw.max_tokens ? int32_t(*raw.max_tokens) : limits.default_max_tokens;
  if (raw.n && (*raw.n < 1 || *raw.n > limits.max_n))
    return bad("n", "'n' must be between 1 and " + std::to_string(limits.max_n));
  out.n = raw.n ? int32_t(*raw.n) : 1;
  if (raw.best_of && *raw.best_of < out.n) return bad("best_of", "'best_of' must be at least 'n'");
  if (raw.best_of && *raw.best_of > out.n)
    return bad("best_of", "'best_of' larger than 'n' is not supported: extra candidates are not generated and ranked "
                          "(as in vLLM V1); ask for n choices");
  if (raw.has_stream_options && !out.stream)
    return bad("stream_options", "'stream_options' is only allowed with 'stream': true");
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
    if (raw.logprobs_count && (*raw.logprobs_count < 0 || *raw.logprobs_count > max_top_logprobs))
      return bad("logprobs", "'logprobs' must be between 0 and " + std::to_string(max_top_logprobs));
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
  if (out.echo && sampling.logprobs)
    return bad("echo", "'echo' with 'logprobs' is not supported: the prompt's log-probabilities are not computed");
  return finish_tools(kind, raw.tools, out);
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
