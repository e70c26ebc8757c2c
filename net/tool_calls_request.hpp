// The request fields of tool calls (internal to net/): `tools`, `tool_choice` and an assistant message's
// `tool_calls`, read from the body, and the tools resolved once every field is read (tool_calls.hpp has
// the convention the model is shown).
#pragma once

#include <simdjson.h>

#include <optional>
#include <string>
#include <vector>

#include "openai_request.hpp"
#include "tool_calls.hpp"

namespace inflight::net {

// What the body said, before it is resolved.
struct tool_fields {
  bool has_tools = false;
  std::optional<std::string> tool_choice;  // "none" | "auto" | "required" | "function:NAME"
};

// tools: [{"type": "function", "function": {"name", "description", "parameters", "strict"}}]
std::optional<api_error> read_tools(simdjson::ondemand::value& v, std::vector<tool_function>& out);
// tool_choice: "none" | "auto" | "required" | {"type": "function", "function": {"name": NAME}}
std::optional<api_error> read_tool_choice(simdjson::ondemand::value& v, std::optional<std::string>& out);
// An assistant message's tool_calls: [{"id", "type": "function", "function": {"name", "arguments"}}]
std::optional<api_error> read_message_tool_calls(simdjson::ondemand::value& v, std::vector<tool_call>& out);

// The mode (auto when tools are given without tool_choice), the checks (a named function must be listed;
// a required or named call's parameter schemas must be enforceable, and no other constraint given), the
// instructions added to out.messages, and the constraint of a required or named call in out.params.
std::optional<api_error> finish_tools(endpoint kind, const tool_fields& raw, completion_request& out);

}  // namespace inflight::net
