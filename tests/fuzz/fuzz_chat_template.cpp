// Fuzz target: the chat-template renderer. The input is split at NUL bytes: the first piece is the
// template text (a model file's tokenizer.chat_template: untrusted), then role, content, role, content...
// (a client's messages). The rendered prompt must hold every message's content (ChatML and the plain
// fallback insert it verbatim; Llama-3 trims it) and is then tokenized as the engine does.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_model.hpp"

using namespace inflight;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<std::string> pieces(1);
  for (size_t i = 0; i < size; ++i) {
    if (data[i] == 0) pieces.emplace_back();
    else pieces.back() += char(data[i]);
  }
  const bool no_template = !pieces[0].empty() && pieces[0][0] == '-';
  const chat_template chat(no_template ? std::nullopt : std::optional<std::string>(pieces[0]));
  std::vector<chat_message> messages;
  for (size_t i = 1; i + 1 < pieces.size(); i += 2) messages.push_back({pieces[i], pieces[i + 1]});
  const bool generation_prompt = size % 2 == 0;
  const std::string prompt = chat.render(messages, generation_prompt);
  if (chat.format() != chat_format::llama3) {
    for (const chat_message& message : messages)
      if (prompt.find(message.content) == std::string::npos) std::abort();
  }
  (void)fuzz::default_tokenizer()->encode(prompt, true);
  return 0;
}
