#include "request_log.hpp"

#include <chrono>
#include <cmath>
#include <ctime>

#include "json_writer.hpp"

namespace inflight::net {

namespace {

// ISO 8601 UTC with milliseconds: 2026-12-06T05:20:00.123Z
std::string iso_time(int64_t unix_ms) {
  const std::time_t seconds = std::time_t(unix_ms / 1000);
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  char text[40];
  const size_t n = std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%S", &utc);
  std::snprintf(text + n, sizeof text - n, ".%03dZ", int(unix_ms % 1000));
  return text;
}

std::string milliseconds(double ms) {
  char text[32];
  std::snprintf(text, sizeof text, "%.1f", ms);
  return text;
}

// logfmt: bare when the value has no space, quote, '=' or control character; else quoted with \" and \\.
void append_logfmt_value(std::string& out, std::string_view value) {
  bool bare = !value.empty();
  for (const char c : value) bare = bare && c > ' ' && c != '"' && c != '=' && c != '\\' && c != 0x7f;
  if (bare) {
    out.append(value);
    return;
  }
  out += '"';
  for (const char c : value) {
    if (c == '"' || c == '\\') out += '\\';
    if (c == '\n') out += "\\n";
    else if (static_cast<unsigned char>(c) < ' ') out += ' ';
    else out += c;
  }
  out += '"';
}

}  // namespace

bool parse_request_log_format(std::string_view name, request_log_format& out) {
  if (name == "text") out = request_log_format::text;
  else if (name == "json") out = request_log_format::json;
  else if (name == "off") out = request_log_format::off;
  else return false;
  return true;
}

std::string format_request_log(request_log_format format, const request_log_entry& e, int64_t now_unix_ms) {
  std::string line;
  if (format == request_log_format::off) return line;
  const std::string ttft = e.ttft_ms < 0 ? std::string() : milliseconds(e.ttft_ms);
  if (format == request_log_format::json) {
    json_writer w(line);
    w.begin_object().key("time").value(iso_time(now_unix_ms)).key("level").value("info").key("event").value("request");
    w.key("id").value(e.id).key("endpoint").value(e.endpoint).key("status").value(int64_t(e.status));
    w.key("stream").value(e.stream).key("choices").value(int64_t(e.choices));
    w.key("prompt_tokens").value(e.prompt_tokens).key("completion_tokens").value(e.completion_tokens);
    w.key("ttft_ms");
    if (e.ttft_ms < 0) w.null();
    else w.raw(ttft);
    w.key("total_ms").raw(milliseconds(e.total_ms));
    w.key("finish").value(e.finish);
    if (!e.error.empty()) w.key("error").value(e.error);
    w.end_object();
  } else {
    const auto field = [&line](std::string_view key, std::string_view value) {
      if (!line.empty()) line += ' ';
      line.append(key).append("=");
      append_logfmt_value(line, value);
    };
    field("time", iso_time(now_unix_ms));
    field("level", "info");
    field("event", "request");
    field("id", e.id);
    field("endpoint", e.endpoint);
    field("status", std::to_string(e.status));
    field("stream", e.stream ? "true" : "false");
    field("choices", std::to_string(e.choices));
    field("prompt_tokens", std::to_string(e.prompt_tokens));
    field("completion_tokens", std::to_string(e.completion_tokens));
    field("ttft_ms", ttft.empty() ? "-" : ttft);
    field("total_ms", milliseconds(e.total_ms));
    field("finish", e.finish.empty() ? "-" : e.finish);
    if (!e.error.empty()) field("error", e.error);
  }
  line += '\n';
  return line;
}

void write_request_log(request_log_format format, const request_log_entry& entry, std::FILE* out) {
  if (format == request_log_format::off) return;
  const int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch()).count();
  const std::string line = format_request_log(format, entry, now);
  std::fwrite(line.data(), 1, line.size(), out);  // one call: stdio locks the stream for it
  std::fflush(out);
}

}  // namespace inflight::net
