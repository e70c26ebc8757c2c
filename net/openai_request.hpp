// OpenAI-compatible request bodies for POST /v1/completions and /v1/chat/completions: JSON in (simdjson
// On-Demand), a validated completion_request or an OpenAI-style error out. No Beast and no CAF here, so
// the unit tests feed it strings; the HTTP and WebSocket layers (serving issue) call it per request.
//
// Accepted, as vLLM's OpenAI server accepts them (null means "not given"):
//   model, prompt (string | [string] | [int] | [[int]]), messages ([{role, content: string | [{type:"text",
//   text}]}]), max_tokens / max_completion_tokens (equal when both), temperature, top_p, top_k, min_p,
//   presence_penalty, frequency_penalty, repetition_penalty, seed, stop (string | [string]), n, best_of
//   (= n), logprobs (completions: int 0..20; chat: bool, with top_logprobs), logit_bias, echo
//   (completions), ignore_eos, user, stream, stream_options.include_usage (with stream); the
//   structured-output fields (structured_output_request.hpp); tools, tool_choice, parallel_tool_calls and
//   the messages' tool_calls and tool results (tool_calls.hpp). Fields that would change the answer and
//   are not honoured are refused (request_field_policy.hpp); any other field is ignored.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "inflight/chat_template.hpp"
#include "inflight/engine.hpp"
#include "tool_calls.hpp"

namespace inflight::net {

// The error object of an OpenAI error response: {"error": {"message", "type", "param", "code"}}.
struct api_error {
  int status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;  // the offending field ("" when none)
};

enum class endpoint { completions, chat_completions };

struct request_limits {
  int32_t max_n = 16;           // choices per request
  int32_t max_prompts = 64;     // prompts in one /v1/completions request
  int32_t max_stop = 16;        // stop strings
  int32_t default_max_tokens = 256;
};

struct completion_request {
  endpoint kind = endpoint::completions;
  std::string model;
  // /v1/completions: one entry per prompt, text or token ids (exactly one of the two is non-empty).
  std::vector<std::string> prompt_texts;
  std::vector<std::vector<int32_t>> prompt_tokens;
  // /v1/chat/completions: the conversation.
  std::vector<chat_message> messages;
  // Sampling, max_tokens, stop, ignore_eos, logprobs, shared by every choice (the prompt fields unset).
  generation_params params;
  int32_t n = 1;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  std::string user;
  bool echo = false;  // completions: each choice's text starts with its prompt
  // Chat only: tools, tool_choice and parallel_tool_calls (tool_calls.hpp). When active, the messages
  // already hold the tool instructions, and for "required" or a named function params.constraint is set.
  tool_spec tools;
};

using parse_result = std::variant<completion_request, api_error>;

// Parses and validates one request body. Never throws for bad input; every error names its field.
parse_result parse_request(endpoint kind, std::string_view body, const request_limits& limits = {});

// POST /tokenize {"prompt": "text"} and POST /detokenize {"tokens": [ids]} (vLLM's extra endpoints).
struct tokenize_request {
  std::string prompt;
};
struct detokenize_request {
  std::vector<int32_t> tokens;
};
// The envelope of a WebSocket message on /v1/ws: {"type": "completion" | "chat" | "cancel", "id": ...}.
// Without "type", a message with "messages" is a chat request and one with "prompt" a completion.
// `id_json` is the client's id as JSON (a string or a number), echoed verbatim in every reply.
struct ws_envelope {
  enum class kind { completion, chat, cancel } type = kind::completion;
  std::string id_json;
};
std::variant<ws_envelope, api_error> parse_ws_envelope(std::string_view body);

std::variant<tokenize_request, api_error> parse_tokenize_request(std::string_view body);
std::variant<detokenize_request, api_error> parse_detokenize_request(std::string_view body);

}  // namespace inflight::net
