// A minimal streaming JSON writer for the responses the server sends: one SSE chunk or WebSocket frame per
// generated token, so it appends to a caller-owned string (reused, no allocation once warm) and keeps no
// DOM. simdjson parses requests; it has no writer in 3.0.1, hence this.
//
//   std::string out;
//   json_writer w(out);
//   w.begin_object().key("id").value("cmpl-1").key("choices").begin_array().end_array().end_object();
//
// Strings are escaped per RFC 8259 (quote, backslash, control characters); other bytes pass through, so the
// caller hands in valid UTF-8 (the detokenizer guarantees it for generated text). Non-finite doubles, which
// JSON cannot represent, are written as null.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace inflight::net {

// Appends `text` as a JSON string literal, quotes included.
void append_json_string(std::string& out, std::string_view text);

class json_writer {
 public:
  explicit json_writer(std::string& out) : out_(out) {}

  json_writer& begin_object() { return open('{'); }
  json_writer& end_object() { return close('}'); }
  json_writer& begin_array() { return open('['); }
  json_writer& end_array() { return close(']'); }
  // An object member's name; the next call writes its value.
  json_writer& key(std::string_view name);

  json_writer& value(std::string_view text);
  json_writer& value(const char* text) { return value(std::string_view(text)); }
  json_writer& value(int64_t number);
  json_writer& value(int32_t number) { return value(int64_t(number)); }
  json_writer& value(uint64_t number);
  json_writer& value(double number);
  json_writer& value(bool flag);
  json_writer& null();
  // A value that is already JSON (e.g. an id echoed as the client wrote it), copied verbatim.
  json_writer& raw(std::string_view json);

 private:
  json_writer& open(char bracket);
  json_writer& close(char bracket);
  void separate();  // a comma before every element but the first of its container

  std::string& out_;
  // One bit per open container: set once it holds an element. 64 levels is far beyond any response.
  uint64_t has_element_ = 0;
  int depth_ = 0;
  bool after_key_ = false;
};

}  // namespace inflight::net
