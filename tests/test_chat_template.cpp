// Chat templates: family recognition, SmolLM2's default system prompt, exact rendered prompts.
#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>

#include "inflight/chat_template.hpp"
#include "inflight/gguf.hpp"
#include "inflight/tokenizer.hpp"

using namespace inflight;

namespace {

// tokenizer.chat_template of SmolLM2-135M-Instruct, verbatim (real newlines inside the literals).
const std::string smollm2_template =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

const std::string smollm2_system = "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

}  // namespace

TEST_CASE("smollm2 template is chatml with its default system prompt") {
  chat_template t(smollm2_template);
  CHECK(t.format() == chat_format::chatml);
  CHECK(t.recognized());
  CHECK(t.warning().empty());
  CHECK(t.default_system_prompt() == smollm2_system);

  const std::vector<chat_message> user_only{{"user", "Hi there"}};
  CHECK(t.render(user_only) ==
        "<|im_start|>system\n" + smollm2_system + "<|im_end|>\n"
        "<|im_start|>user\nHi there<|im_end|>\n"
        "<|im_start|>assistant\n");
  CHECK(t.render(user_only, false) ==
        "<|im_start|>system\n" + smollm2_system + "<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n");
}

TEST_CASE("an explicit system message replaces the default") {
  chat_template t(smollm2_template);
  const std::vector<chat_message> conversation{
      {"system", "Be brief."}, {"user", "2+2?"}, {"assistant", "4"}, {"user", "And 3+3?"}};
  CHECK(t.render(conversation) ==
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\n2+2?<|im_end|>\n"
        "<|im_start|>assistant\n4<|im_end|>\n"
        "<|im_start|>user\nAnd 3+3?<|im_end|>\n"
        "<|im_start|>assistant\n");
  CHECK(t.render({}) == "<|im_start|>assistant\n");  // no messages: no injected system turn
}

TEST_CASE("chatml default prompt written with escapes or after a spliced system message") {
  // Newlines as \n escapes inside the Jinja literal, and an escaped apostrophe.
  chat_template escaped(
      "{{ '<|im_start|>system\\nYou\\'re a helpful assistant.<|im_end|>\\n' }}{% for m in messages %}...");
  CHECK(escaped.default_system_prompt() == "You're a helpful assistant.");
  // Qwen-style: the first occurrence splices in the user's system message; the default comes later.
  chat_template qwen(
      "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + "
      "'<|im_end|>\\n' }}{%- else %}{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud.<|im_end|>\\n' }}"
      "{%- endif %}");
  CHECK(qwen.format() == chat_format::chatml);
  CHECK(qwen.default_system_prompt() == "You are Qwen, created by Alibaba Cloud.");
  // Plain ChatML without a default system prompt injects nothing.
  chat_template plain("{% for m in messages %}{{'<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n'}}{% endfor %}");
  CHECK(plain.default_system_prompt().empty());
  const std::vector<chat_message> user_only{{"user", "hi"}};
  CHECK(plain.render(user_only) == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
}

TEST_CASE("llama3 template") {
  chat_template t(
      "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
      "'<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}");
  CHECK(t.format() == chat_format::llama3);
  CHECK(t.warning().empty());
  const std::vector<chat_message> msgs{{"system", "Be nice. "}, {"user", " Hello"}};
  CHECK(t.render(msgs) ==
        "<|start_header_id|>system<|end_header_id|>\n\nBe nice.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

TEST_CASE("missing or unknown template falls back with a warning") {
  const std::vector<chat_message> msgs{{"system", "S"}, {"user", "U"}, {"assistant", "A"}, {"user", "V"}};
  chat_template none(std::nullopt);
  CHECK(none.format() == chat_format::fallback);
  CHECK_FALSE(none.recognized());
  CHECK(none.warning().find("no chat template") != std::string::npos);
  CHECK(none.render(msgs) == "System: S\nUser: U\nAssistant: A\nUser: V\nAssistant:");
  chat_template odd("{% for m in messages %}[INST] {{ m['content'] }} [/INST]{% endfor %}");
  CHECK(odd.format() == chat_format::fallback);
  CHECK(odd.warning().find("unrecognised") != std::string::npos);
  CHECK(std::string(chat_format_name(odd.format())) == "fallback");
}

TEST_CASE("smollm2 gguf template renders and tokenizes") {
  if (!std::filesystem::exists(INFLIGHT_DEFAULT_MODEL)) FAIL("default model missing: " << INFLIGHT_DEFAULT_MODEL);
  const auto file = gguf::gguf_file::open(INFLIGHT_DEFAULT_MODEL);
  const auto t = chat_template::from_gguf(*file);
  CHECK(t.format() == chat_format::chatml);
  CHECK(t.source() == smollm2_template);
  CHECK(t.default_system_prompt() == smollm2_system);
  const auto tok = tokenizer::from_gguf(*file);
  const std::vector<chat_message> msgs{{"user", "Hi"}};
  const auto ids = tok->encode(t.render(msgs));
  REQUIRE(ids.size() > 8);
  CHECK(ids.front() == 1);  // <|im_start|>
  const auto prompt = tok->encode("<|im_start|>assistant\n");  // the generation prompt ends the ids
  CHECK(std::equal(prompt.begin(), prompt.end(), ids.end() - std::ptrdiff_t(prompt.size())));
  CHECK(tok->decode(ids) == t.render(msgs));
}
