#include "request_json.hpp"

#include <cmath>

namespace inflight::net {

using simdjson::ondemand::json_type;
using simdjson::ondemand::value;

api_error bad(std::string param, std::string message) {
  api_error error;
  error.param = std::move(param);
  error.message = std::move(message);
  return error;
}

api_error wrong_type(const std::string& key, const char* expected) {
  return bad(key, "'" + key + "' must be " + expected);
}

std::optional<json_type> type_of(value& v) {
  json_type type;
  if (v.type().get(type)) return std::nullopt;
  return type;
}

std::optional<api_error> read_number(value& v, const std::string& key, std::optional<double>& out) {
  const auto type = type_of(v);
  if (type == json_type::null) return std::nullopt;
  double number = 0;
  if (type != json_type::number || v.get_double().get(number) || !std::isfinite(number))
    return wrong_type(key, "a number");
  out = number;
  return std::nullopt;
}

std::optional<api_error> read_integer(value& v, const std::string& key, std::optional<int64_t>& out) {
  const auto type = type_of(v);
  if (type == json_type::null) return std::nullopt;
  int64_t number = 0;
  if (type != json_type::number || v.get_int64().get(number)) return wrong_type(key, "an integer");
  out = number;
  return std::nullopt;
}

std::optional<api_error> read_bool(value& v, const std::string& key, bool& out) {
  const auto type = type_of(v);
  if (type == json_type::null) return std::nullopt;
  if (type != json_type::boolean || v.get_bool().get(out)) return wrong_type(key, "a boolean");
  return std::nullopt;
}

std::optional<api_error> read_string(value& v, const std::string& key, std::string& out) {
  const auto type = type_of(v);
  if (type == json_type::null) return std::nullopt;
  std::string_view text;
  if (type != json_type::string || v.get_string().get(text)) return wrong_type(key, "a string");
  out.assign(text);
  return std::nullopt;
}

}  // namespace inflight::net
