// Chat prompt rendering from the GGUF key tokenizer.chat_template, without a Jinja engine: the template
// text is only inspected to recognise its family; each family's format is hard-coded below.
//
// ChatML (the template contains "<|im_start|>"; SmolLM2, Qwen, ...):
//     [<|im_start|>system\n{default system prompt}<|im_end|>\n]      only if the template has one and
//                                                                     the first message is not "system"
//     <|im_start|>{role}\n{content}<|im_end|>\n                       per message
//     <|im_start|>assistant\n                                         generation prompt
//   The default system prompt is taken from the template text: the literal that follows
//   "<|im_start|>system\n" (newline written literally or as the escape \n) up to "<|im_end|>".
//
// Llama-3 (the template contains "<|start_header_id|>"), as llama.cpp's built-in LLAMA_3 format; BOS is
// left to the tokenizer (add_bos_token):
//     <|start_header_id|>{role}<|end_header_id|>\n\n{trimmed content}<|eot_id|>    per message
//     <|start_header_id|>assistant<|end_header_id|>\n\n                               generation prompt
//
// Anything else, or no template at all, falls back to a plain-text format and sets warning():
//     System: {content}\n   User: {content}\n   Assistant: {content}\n   (role capitalised; other
//     roles likewise) then "Assistant:" as the generation prompt. The model was not trained on it, so
//     the caller should show the warning.
//
// The rendered prompt contains special-token text: encode it with parse_special = true. Message content
// is inserted verbatim; a caller that must stop users from injecting special tokens has to reject or
// escape them before rendering.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace inflight {
namespace gguf { class gguf_file; }

struct chat_message {
  std::string role, content;
};

enum class chat_format { chatml, llama3, fallback };

const char* chat_format_name(chat_format f);

class chat_template {
 public:
  // `template_text`: tokenizer.chat_template, or nullopt when the model has none.
  explicit chat_template(std::optional<std::string> template_text);
  // Reads tokenizer.chat_template from the file (absent -> fallback format).
  static chat_template from_gguf(const gguf::gguf_file& file);

  chat_format format() const { return format_; }
  bool recognized() const { return format_ != chat_format::fallback; }
  // Empty when the template was recognised; otherwise one line the caller can print.
  const std::string& warning() const { return warning_; }
  // Injected when the first message is not a system message (empty: none).
  const std::string& default_system_prompt() const { return default_system_prompt_; }
  // The template text the format was chosen from (empty if absent).
  const std::string& source() const { return source_; }

  // The prompt for `messages`, ending with the assistant's generation prompt when asked.
  std::string render(std::span<const chat_message> messages, bool add_generation_prompt = true) const;

 private:
  std::string source_;
  chat_format format_ = chat_format::fallback;
  std::string default_system_prompt_;
  std::string warning_;
};

}  // namespace inflight
