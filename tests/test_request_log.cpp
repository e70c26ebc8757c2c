// The request log's two formats (net/request_log.hpp): logfmt with quoting where a value needs it, JSON that
// parses whatever the error message holds, the timestamp, and nothing for `off`.
#include <doctest/doctest.h>

#include <simdjson.h>

#include <string>

#include "request_log.hpp"

using namespace inflight::net;

namespace {

request_log_entry sample_entry() {
  request_log_entry entry;
  entry.id = "chatcmpl-7";
  entry.endpoint = "/v1/chat/completions";
  entry.status = 200;
  entry.stream = true;
  entry.choices = 2;
  entry.prompt_tokens = 31;
  entry.completion_tokens = 12;
  entry.ttft_ms = 45.06;
  entry.total_ms = 230.44;
  entry.finish = "stop,length";
  return entry;
}

constexpr int64_t when = 1796534400123;  // 2026-12-06T05:20:00.123Z

}  // namespace

TEST_CASE("logfmt: key=value, quoted only where needed") {
  CHECK(format_request_log(request_log_format::text, sample_entry(), when) ==
        "time=2026-12-06T05:20:00.123Z level=info event=request id=chatcmpl-7 endpoint=/v1/chat/completions "
        "status=200 stream=true choices=2 prompt_tokens=31 completion_tokens=12 ttft_ms=45.1 total_ms=230.4 "
        "finish=stop,length\n");
  request_log_entry refused;
  refused.endpoint = "/v1/completions";
  refused.status = 400;
  refused.error = "'stop' is \"odd\"\nsecond line";
  const std::string line = format_request_log(request_log_format::text, refused, when);
  CHECK(line.find(" id=- ") != std::string::npos);
  CHECK(line.find(" ttft_ms=- ") != std::string::npos);
  CHECK(line.find(" finish=- ") != std::string::npos);
  CHECK(line.find(R"( error="'stop' is \"odd\"\nsecond line")") != std::string::npos);
  CHECK(line.find('\n') == line.size() - 1);  // one line, whatever the message holds
}

TEST_CASE("JSON: one object per line that parses, null for no first token") {
  request_log_entry entry = sample_entry();
  entry.error = "quote \" backslash \\ control \x01 newline \n";
  entry.ttft_ms = -1;
  const std::string line = format_request_log(request_log_format::json, entry, when);
  REQUIRE(line.back() == '\n');
  CHECK(line.find('\n') == line.size() - 1);
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  REQUIRE(parser.parse(line).get(root) == simdjson::SUCCESS);
  CHECK(std::string_view(root["time"]) == "2026-12-06T05:20:00.123Z");
  CHECK(std::string_view(root["event"]) == "request");
  CHECK(int64_t(root["status"]) == 200);
  CHECK(bool(root["stream"]));
  CHECK(int64_t(root["completion_tokens"]) == 12);
  CHECK(root["ttft_ms"].is_null());
  CHECK(double(root["total_ms"]) == doctest::Approx(230.4));
  CHECK(std::string_view(root["error"]) == entry.error);
}

TEST_CASE("off writes nothing; the format names parse") {
  CHECK(format_request_log(request_log_format::off, sample_entry(), when).empty());
  request_log_format format = request_log_format::off;
  CHECK(parse_request_log_format("json", format));
  CHECK(format == request_log_format::json);
  CHECK(parse_request_log_format("text", format));
  CHECK(format == request_log_format::text);
  CHECK_FALSE(parse_request_log_format("yaml", format));
}
