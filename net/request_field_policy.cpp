#include "request_field_policy.hpp"

#include <array>
#include <string>

namespace inflight::net {

namespace {

constexpr std::array<unhonoured_field, 35> table = {{
    // OpenAI
    {"suffix", true, R"("")", "the model has no fill-in-the-middle, so the text would ignore the suffix"},
    {"modalities", true, R"(["text"])", "only text is generated"},
    {"audio", true, "", "only text is generated"},
    {"web_search_options", true, "", "inflight does not search the web"},
    {"store", false, "", "stored completions are an OpenAI platform feature; nothing is stored"},
    {"metadata", false, "", "annotates stored completions only"},
    {"service_tier", false, "", "a billing choice"},
    {"prediction", false, "", "predicted outputs only make an answer faster, never different"},
    {"reasoning_effort", false, "", "for reasoning models; the served model does not reason in hidden tokens"},
    // vLLM's extensions
    {"min_tokens", true, "0", "the answer could end before min_tokens"},
    {"stop_token_ids", true, "[]", "use 'stop' with the tokens' text"},
    {"include_stop_str_in_output", true, "false", "the stop string is never part of the output"},
    {"spaces_between_special_tokens", false, "", "special tokens are written as they are"},
    {"use_beam_search", true, "false", "there is no beam search; use n"},
    {"length_penalty", true, "1|1.0", "it applies to beam search, which there is not"},
    {"prompt_logprobs", true, "", "the prompt's log-probabilities are not computed"},
    {"allowed_token_ids", true, "", "use logit_bias"},
    {"bad_words", true, "[]", "use logit_bias with -100"},
    {"truncate_prompt_tokens", true, "", "a prompt longer than the context is refused, not truncated"},
    {"add_generation_prompt", true, "true", "the assistant's turn is always opened"},
    {"continue_final_message", true, "false", "the assistant's turn is always a new one"},
    {"chat_template", true, "", "the model's own chat template is used"},
    {"chat_template_kwargs", true, "{}", "the model's chat template takes no arguments"},
    {"documents", true, "[]", "the chat template has no documents"},
    {"guided_whitespace_pattern", true, "", "structured output writes JSON with fixed whitespace"},
    {"guided_decoding_backend", false, "", "structured output always uses xgrammar"},
    {"return_tokens_as_token_ids", true, "false", "logprobs name tokens by their text"},
    {"priority", false, "", "requests are served first come, first served"},
    // llama.cpp's server
    {"n_predict", true, "-1", "use max_tokens"},
    {"n_probs", true, "0", "use logprobs (completions) or logprobs and top_logprobs (chat)"},
    {"typical_p", true, "1|1.0", "typical sampling is not implemented"},
    {"mirostat", true, "0", "mirostat sampling is not implemented"},
    {"repeat_penalty", true, "1|1.0", "use repetition_penalty (over the prompt and the output, not a window)"},
    {"dry_multiplier", true, "0|0.0", "DRY sampling is not implemented"},
    {"cache_prompt", false, "", "prompts are always cached (prefix cache)"},
}};

// The value's JSON text without whitespace outside strings, for comparison with the neutral values.
std::string compact_json(std::string_view raw) {
  std::string out;
  bool in_string = false, escaped = false;
  for (const char c : raw) {
    if (in_string) {
      out += c;
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
      out += c;
    } else if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
      out += c;
    }
  }
  return out;
}

bool is_neutral(std::string_view neutral, std::string_view value) {
  while (!neutral.empty()) {
    const size_t bar = neutral.find('|');
    if (neutral.substr(0, bar) == value) return true;
    if (bar == std::string_view::npos) break;
    neutral.remove_prefix(bar + 1);
  }
  return false;
}

// (Built by appending: g++ 12 warns falsely (-Wrestrict) about "'" + std::string(...).)
api_error refusal(std::string_view key, std::string_view message) {
  api_error error;
  error.param.assign(key);
  error.message.append("'").append(key).append("' ").append(message);
  return error;
}

}  // namespace

std::span<const unhonoured_field> unhonoured_fields() { return table; }

std::optional<api_error> check_unhonoured_field(std::string_view key, simdjson::ondemand::value& v, bool& listed) {
  listed = false;
  for (const unhonoured_field& field : table) {
    if (field.name != key) continue;
    listed = true;
    if (!field.refused) return std::nullopt;
    simdjson::ondemand::json_type type;
    if (v.type().get(type)) return refusal(key, "is not valid JSON");
    if (type == simdjson::ondemand::json_type::null) return std::nullopt;
    std::string_view raw;
    if (type == simdjson::ondemand::json_type::array) {
      simdjson::ondemand::array array;
      if (v.get_array().get(array) || array.raw_json().get(raw)) raw = {};
    } else if (type == simdjson::ondemand::json_type::object) {
      simdjson::ondemand::object object;
      if (v.get_object().get(object) || object.raw_json().get(raw)) raw = {};
    } else {
      raw = v.raw_json_token();
    }
    if (is_neutral(field.neutral, compact_json(raw))) return std::nullopt;
    return refusal(key, std::string("is not supported: ").append(field.why));
  }
  return std::nullopt;
}

}  // namespace inflight::net
