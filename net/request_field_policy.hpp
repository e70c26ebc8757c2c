// The request fields inflight does not honour, and what it does with each: OpenAI's, vLLM's and llama.cpp's
// fields that would change the answer are refused with a 400 naming the field, unless they hold their
// neutral value (null, or the value that asks for nothing: `"suffix": ""`, `"min_tokens": 0`,
// `"modalities": ["text"]`, ...), so that a client that asked for them never gets a 200 of the wrong
// kind; fields that only annotate or tune what the server does anyway are ignored. Every field not listed
// here and not read by openai_request.cpp is ignored, as OpenAI-compatible servers do. README's
// "Request fields" table lists the same, and test_request_fields tests every row.
#pragma once

#include <simdjson.h>

#include <optional>
#include <span>
#include <string_view>

#include "openai_request.hpp"

namespace inflight::net {

struct unhonoured_field {
  std::string_view name;
  bool refused = true;       // false: ignored as harmless
  std::string_view neutral;  // refused fields: the JSON values (besides null) accepted, '|'-separated
  std::string_view why;      // why it is refused (the 400's message ends with it) or why ignoring is harmless
};

// The table above, for the tests and the docs.
std::span<const unhonoured_field> unhonoured_fields();

// `key` in the table: `listed` is set, and a refused field holding a value other than null or a neutral one
// gives the 400. Not in the table: `listed` stays false.
std::optional<api_error> check_unhonoured_field(std::string_view key, simdjson::ondemand::value& v, bool& listed);

}  // namespace inflight::net
