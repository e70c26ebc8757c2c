// The readers of JSON values that the request parsers share (internal to net/): each returns an
// OpenAI-style 400 naming the field for a value of the wrong type, and leaves `out` untouched for null.
#pragma once

#include <simdjson.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

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

// Calls on_member(key, value) for each member of `object`, in order; a member that does not parse is a 400
// naming `param`, and the first error on_member returns ends the walk.
template <class OnMember>
std::optional<api_error> for_each_member(simdjson::ondemand::object& object, const std::string& param,
                                         OnMember&& on_member) {
  for (auto field : object) {
    std::string_view key;
    simdjson::ondemand::value item;
    if (field.unescaped_key().get(key) || field.value().get(item)) return bad(param, "'" + param + "' is not valid JSON");
    if (std::optional<api_error> error = on_member(key, item)) return error;
  }
  return std::nullopt;
}

}  // namespace inflight::net
