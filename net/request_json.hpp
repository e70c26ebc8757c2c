// The readers of JSON values that the request parsers share (internal to net/): each returns an
// OpenAI-style 400 naming the field for a value of the wrong type, and leaves `out` untouched for null.
#pragma once

#include <simdjson.h>

#include <cstdint>
#include <optional>
#include <string>

#include "openai_request.hpp"

namespace inflight::net {

api_error bad(std::string param, std::string message);
api_error wrong_type(const std::string& key, const char* expected);

// The value's JSON type, or nullopt when the document is malformed at that point.
std::optional<simdjson::ondemand::json_type> type_of(simdjson::ondemand::value& v);

std::optional<api_error> read_number(simdjson::ondemand::value& v, const std::string& key, std::optional<double>& out);
std::optional<api_error> read_integer(simdjson::ondemand::value& v, const std::string& key, std::optional<int64_t>& out);
std::optional<api_error> read_bool(simdjson::ondemand::value& v, const std::string& key, bool& out);
std::optional<api_error> read_string(simdjson::ondemand::value& v, const std::string& key, std::string& out);

}  // namespace inflight::net
