// OpenAI-compatible response bodies (JSON only; SSE framing and HTTP belong to the server): full
// responses for /v1/completions and /v1/chat/completions, streaming chunks, the final usage chunk, and
// error bodies. Each function appends to a caller-owned string, so a stream reuses one buffer per token.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "inflight/engine_protocol.hpp"
#include "inflight/sampling.hpp"
#include "openai_request.hpp"

namespace inflight {
class tokenizer;
}

namespace inflight::net {

// OpenAI's finish_reason for an engine finish: "stop" and "length" as OpenAI defines them; a deadline
// counts as a limit reached ("length"); cancelled, aborted and failed requests are "abort", as vLLM
// reports them. Returns nullptr for finish_reason::none (JSON null: still generating).
const char* openai_finish_reason(engine::finish_reason reason);

struct response_meta {
  std::string_view id;  // "cmpl-..." or "chatcmpl-..."
  int64_t created = 0;  // Unix seconds
  std::string_view model;
};

struct usage_counts {
  int64_t prompt_tokens = 0, completion_tokens = 0;
};

// Log-probabilities of a choice's tokens: all of them in a whole response, those since the previous chunk
// in a stream. Tokens are named by the tokenizer: their bytes, with U+FFFD for a token that ends inside a
// UTF-8 character (the raw bytes are in chat's "bytes" field), special tokens by their text, as vLLM does.
struct choice_logprobs {
  const tokenizer* tok = nullptr;
  std::span<const sample_result> samples;
  // Completions' text_offset: where the first token's text starts in the choice's output, in characters
  // (code points). Writing advances it past the tokens written, ready for the next chunk.
  int64_t text_offset = 0;
};

struct choice_output {
  int32_t index = 0;
  std::string_view text;
  engine::finish_reason finish = engine::finish_reason::none;
  choice_logprobs* logprobs = nullptr;  // null: not asked for (JSON null)
  // Chat, when the model called tools: the calls (the message's content is then `text`, or null when that
  // is empty), and whether the finish_reason is "tool_calls" (once `finish` is set): a stream sends the
  // calls in one chunk and the finish in the next.
  std::span<const tool_call> tool_calls;
  bool finished_with_tool_calls = false;
};

// The "logprobs" value of a choice: completions' {"tokens", "token_logprobs", "top_logprobs", "text_offset"}
// (top_logprobs maps token text to logprob and, as in vLLM, includes the chosen token), or chat's
// {"content": [{"token", "logprob", "bytes", "top_logprobs": [{"token", "logprob", "bytes"}]}]}.
void write_logprobs(std::string& out, endpoint kind, choice_logprobs& logprobs);

// {"error": {"message", "type", "param", "code": null}}
void write_error(std::string& out, const api_error& error);

// A whole non-streaming response: "text_completion" with choices[].text, or "chat.completion" with
// choices[].message {role: "assistant", content, tool_calls when there are}; both with usage.
void write_response(std::string& out, endpoint kind, const response_meta& meta, std::span<const choice_output> choices,
                    const usage_counts& usage);

// One streaming chunk for one choice: its new text and, on its last chunk, its finish_reason. Chat chunks
// carry {"role": "assistant"} in the delta of the first chunk (`first`), as OpenAI's do, and tool calls as
// delta.tool_calls [{index, id, type, function: {name, arguments}}], each whole in one chunk.
void write_chunk(std::string& out, endpoint kind, const response_meta& meta, const choice_output& choice, bool first);

// The extra last chunk of stream_options.include_usage: no choices, the request's usage.
void write_usage_chunk(std::string& out, endpoint kind, const response_meta& meta, const usage_counts& usage);

}  // namespace inflight::net
