// The request fields that ask for structured output, in the spellings clients use (internal to net/):
//   OpenAI   response_format: {"type": "text" | "json_object" | "json_schema", "json_schema": {"name",
//            "schema", "strict", "description"}} (chat, and /v1/completions as vLLM takes it)
//   vLLM     guided_json (a schema, as an object or a JSON string), guided_regex, guided_grammar (GBNF here),
//            guided_choice (a list of strings)
//   llama.cpp  json_schema (a schema object), grammar (GBNF)
// At most one of them per request. A JSON Schema is checked keyword by keyword: what the grammar engine
// enforces and what only annotates is taken; anything else is refused with a 400 that names the keyword
// and where it is, since enforcing part of a schema would return output that does not validate.
#pragma once

#include <simdjson.h>

#include <optional>
#include <string>
#include <string_view>

#include "inflight/output_constraint.hpp"
#include "openai_request.hpp"

namespace inflight::net {

// Whether `key` is one of the fields above.
bool is_structured_output_field(std::string_view key);

// Reads one of those fields into `out`; an error for a malformed value, an unsupported schema keyword, or
// a second constraint on a request that has one.
std::optional<api_error> read_structured_output_field(std::string_view key, simdjson::ondemand::value& v,
                                                      output_constraint& out);

// A JSON Schema (JSON text) checked against the keywords the engine enforces; `param` names the field in
// the error. Exposed for the unit tests.
std::optional<api_error> check_json_schema(std::string_view schema, const std::string& param);

}  // namespace inflight::net
