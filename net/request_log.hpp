// One log line per request, for operators and their log tools: what was asked (endpoint, stream, choices),
// how it ended (HTTP status, finish reasons or the error), its size (prompt and completion tokens) and its
// latency (time to first token, total). Written to stderr in logfmt (key=value, values with spaces or
// quotes quoted) or as one JSON object per line, as `inflight serve --log-requests text|json|off` chooses.
// Nothing secret goes in: no prompt, no output text, no API key (the error message of a refusal names a
// field, never its value beyond what the client sent as a model name or stop string).
#pragma once

#include <cstdio>
#include <string>
#include <string_view>

namespace inflight::net {

enum class request_log_format { off, text, json };

struct request_log_entry {
  std::string id = "-";  // the response's id ("cmpl-3", "chatcmpl-4"), or "ws:" and the client's id (as JSON)
  std::string endpoint;  // "/v1/completions", "/v1/chat/completions", "/v1/ws"
  int status = 200;      // the HTTP status sent (a failure after streaming began: 200, with finish "error")
  bool stream = false;
  int choices = 0;
  int64_t prompt_tokens = 0, completion_tokens = 0;
  double ttft_ms = -1;  // first token's text after the request arrived; < 0: no token
  double total_ms = 0;
  std::string finish;  // the choices' finish reasons, comma-separated ("stop", "length,stop", "error")
  std::string error;   // the error message sent, when the request failed
};

// "text" | "json" | "off" -> the format; false for anything else.
bool parse_request_log_format(std::string_view name, request_log_format& out);

// The line for `entry` (ending in '\n'); empty for request_log_format::off. `now_unix_ms` stamps it.
std::string format_request_log(request_log_format format, const request_log_entry& entry, int64_t now_unix_ms);

// Formats the entry with the current time and writes it to `out` in one call (lines from several threads
// do not interleave).
void write_request_log(request_log_format format, const request_log_entry& entry, std::FILE* out = stderr);

}  // namespace inflight::net
