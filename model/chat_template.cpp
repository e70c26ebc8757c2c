#include "inflight/chat_template.hpp"

#include <cctype>

#include "inflight/gguf.hpp"

namespace inflight {
namespace {

constexpr std::string_view im_start = "<|im_start|>";
constexpr std::string_view im_end = "<|im_end|>";

// Undoes the escapes of a Jinja string literal (\n, \t, \', \", \\); other backslashes stay.
std::string unescape_jinja(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size()) {
      const char c = s[i + 1];
      const char plain = c == 'n' ? '\n' : c == 't' ? '\t' : (c == '\'' || c == '"' || c == '\\') ? c : 0;
      if (plain) {
        out.push_back(plain);
        ++i;
        continue;
      }
    }
    out.push_back(s[i]);
  }
  return out;
}

bool has_unescaped(std::string_view s, char quote) {
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\') ++i;
    else if (s[i] == quote) return true;
  }
  return false;
}

// The default system prompt of a ChatML template: a string literal '<|im_start|>system\n...<|im_end|>'.
// Occurrences that splice in a message ('<|im_start|>system\n' + messages[0]['content'] + ...) are
// skipped because the text before <|im_end|> then leaves the literal (contains its closing quote).
std::string extract_chatml_system_prompt(std::string_view tmpl) {
  const std::string header = std::string(im_start) + "system";
  for (size_t at = tmpl.find(header); at != std::string_view::npos; at = tmpl.find(header, at + 1)) {
    size_t body = at + header.size();
    if (tmpl.substr(body, 1) == "\n") body += 1;
    else if (tmpl.substr(body, 2) == "\\n") body += 2;
    else continue;
    const size_t end = tmpl.find(im_end, body);
    if (end == std::string_view::npos) break;
    const std::string_view literal = tmpl.substr(body, end - body);
    const char quote = at > 0 && (tmpl[at - 1] == '\'' || tmpl[at - 1] == '"') ? tmpl[at - 1] : 0;
    if (literal.empty() || (quote && has_unescaped(literal, quote))) continue;
    if (literal.find("{{") != std::string_view::npos || literal.find("{%") != std::string_view::npos) continue;
    return quote ? unescape_jinja(literal) : std::string(literal);
  }
  return {};
}

std::string trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return std::string(s.substr(b, e - b));
}

std::string capitalized(std::string_view role) {
  std::string out(role);
  if (!out.empty()) out[0] = char(std::toupper(static_cast<unsigned char>(out[0])));
  return out;
}

}  // namespace

const char* chat_format_name(chat_format f) {
  switch (f) {
    case chat_format::chatml: return "chatml";
    case chat_format::llama3: return "llama3";
    case chat_format::fallback: return "fallback";
  }
  return "?";
}

chat_template::chat_template(std::optional<std::string> template_text) : source_(template_text.value_or("")) {
  if (source_.find(im_start) != std::string::npos) {
    format_ = chat_format::chatml;
    default_system_prompt_ = extract_chatml_system_prompt(source_);
  } else if (source_.find("<|start_header_id|>") != std::string::npos) {
    format_ = chat_format::llama3;
  } else {
    format_ = chat_format::fallback;
    warning_ = template_text ? "unrecognised chat template (neither ChatML nor Llama-3); using a plain "
                               "'User: ... Assistant:' format the model was not trained on"
                             : "the model has no chat template (tokenizer.chat_template); using a plain "
                               "'User: ... Assistant:' format the model was not trained on";
  }
}

chat_template chat_template::from_gguf(const gguf::gguf_file& file) {
  return chat_template(file.find_string("tokenizer.chat_template"));
}

std::string chat_template::render(std::span<const chat_message> messages, bool add_generation_prompt) const {
  std::string out;
  switch (format_) {
    case chat_format::chatml: {
      auto turn = [&](std::string_view role, std::string_view content) {
        out.append(im_start).append(role).append("\n").append(content).append(im_end).append("\n");
      };
      if (!default_system_prompt_.empty() && !messages.empty() && messages.front().role != "system") {
        turn("system", default_system_prompt_);
      }
      for (const auto& m : messages) turn(m.role, m.content);
      if (add_generation_prompt) out.append(im_start).append("assistant\n");
      break;
    }
    case chat_format::llama3: {
      for (const auto& m : messages) {
        out.append("<|start_header_id|>").append(m.role).append("<|end_header_id|>\n\n");
        out.append(trim(m.content)).append("<|eot_id|>");
      }
      if (add_generation_prompt) out.append("<|start_header_id|>assistant<|end_header_id|>\n\n");
      break;
    }
    case chat_format::fallback: {
      for (const auto& m : messages) out.append(capitalized(m.role)).append(": ").append(m.content).append("\n");
      if (add_generation_prompt) out.append("Assistant:");
      break;
    }
  }
  return out;
}

}  // namespace inflight
