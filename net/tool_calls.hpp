// Tool calls (OpenAI's `tools`, `tool_choice`, `parallel_tool_calls`) for models whose chat template has no
// tool syntax of its own, SmolLM2's ChatML among them. The convention is the one of Hermes-2-Pro and
// Qwen2.5, which vLLM's `hermes` parser reads: the functions are listed in the system message between
// <tools></tools>, the model calls one by writing
//     <tool_call>
//     {"name": "get_weather", "arguments": {"city": "Paris"}}
//     </tool_call>
// and a tool's result comes back in a user turn between <tool_response></tool_response>.
//   - tool_choice "auto" (the default when tools are given): the model may answer or call; the output is
//     searched for <tool_call> blocks, each a JSON object naming a listed function.
//   - "required": the output is constrained (structured output) to a JSON array of at least one call
//     (exactly one with parallel_tool_calls false), each {"name": one of the functions, "arguments": valid
//     for that function's parameters}.
//   - a named function: the output is constrained to that function's arguments.
//   - "none": the tools are not shown to the model and nothing is parsed.
// Beast- and CAF-free: the unit tests feed it strings.
#pragma once

#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "inflight/chat_template.hpp"
#include "inflight/output_constraint.hpp"

namespace inflight::net {

struct tool_function {
  std::string name, description;
  std::string parameters = R"({"type": "object"})";  // a JSON Schema's text
};

enum class tool_mode { none, automatic, required, named };

struct tool_spec {
  std::vector<tool_function> functions;
  tool_mode mode = tool_mode::none;  // resolved: "auto" when tools are given and tool_choice is not
  std::string named;                 // tool_mode::named: the function
  bool parallel = true;              // parallel_tool_calls
  bool active() const { return mode != tool_mode::none && !functions.empty(); }
};

struct tool_call {
  std::string id;  // "call_..."
  std::string name;
  std::string arguments;  // JSON text of an object, as OpenAI sends it (a string holding JSON)
};

// The function list and how to call one, as the first system message: appended to the request's own
// system message, or a new one.
void add_tool_instructions(std::vector<chat_message>& messages, const tool_spec& tools);

// An assistant turn's earlier calls, as the model would have written them.
std::string render_tool_calls(std::span<const tool_call> calls);
// A tool's result, as the model reads it (in a user turn).
std::string render_tool_result(std::string_view content);

// The constraint for "required" and a named function (none for "auto"): JSON as described above.
output_constraint tool_output_constraint(const tool_spec& tools);

struct tool_output {
  std::vector<tool_call> calls;
  std::string content;  // the text outside the calls (auto), trimmed; empty when there is none
};

// The calls in a finished output, or nullopt when it holds none (auto: no well-formed <tool_call> block
// naming a listed function; required/named: output that is not the complete JSON, e.g. cut by max_tokens).
// `new_id` makes each call's id.
std::optional<tool_output> parse_tool_output(const tool_spec& tools, std::string_view text,
                                             const std::function<std::string()>& new_id);

// Streaming with tool_choice auto: text goes out as it comes until a <tool_call> block may be starting;
// from there on it is held until the output ends, when parse_tool_output decides what it was.
class tool_text_splitter {
 public:
  // The part of `text` (after what came before) that can be sent as content now.
  std::string feed(std::string_view text);
  // Everything not sent yet.
  const std::string& held() const { return held_; }

 private:
  std::string held_;
  bool capturing_ = false;  // a <tool_call> opened: hold everything from there
};

}  // namespace inflight::net
