#include "openai_response.hpp"

#include <algorithm>
#include <string>
#include <vector>

#include "inflight/tokenizer.hpp"
#include "json_writer.hpp"
#include "unicode_text.hpp"

namespace inflight::net {

namespace {

const char* object_name(endpoint kind, bool chunk) {
  if (kind == endpoint::completions) return "text_completion";  // OpenAI uses the same name for chunks
  return chunk ? "chat.completion.chunk" : "chat.completion";
}

void write_header(json_writer& w, endpoint kind, const response_meta& meta, bool chunk) {
  w.key("id").value(meta.id).key("object").value(object_name(kind, chunk)).key("created").value(meta.created);
  w.key("model").value(meta.model);
}

void write_finish(json_writer& w, const choice_output& choice) {
  w.key("finish_reason");
  if (choice.finished_with_tool_calls && choice.finish != engine::finish_reason::none)
    w.value("tool_calls");
  else if (const char* reason = openai_finish_reason(choice.finish))
    w.value(reason);
  else
    w.null();
}

// [{"index"?, "id", "type": "function", "function": {"name", "arguments"}}]; the index in stream deltas only.
void write_tool_calls(json_writer& w, std::span<const tool_call> calls, bool with_index) {
  w.key("tool_calls").begin_array();
  for (size_t i = 0; i < calls.size(); ++i) {
    w.begin_object();
    if (with_index) w.key("index").value(int64_t(i));
    w.key("id").value(calls[i].id).key("type").value("function").key("function").begin_object();
    w.key("name").value(calls[i].name).key("arguments").value(calls[i].arguments).end_object().end_object();
  }
  w.end_array();
}

void write_usage(json_writer& w, const usage_counts& usage) {
  w.key("usage").begin_object();
  w.key("prompt_tokens").value(usage.prompt_tokens).key("completion_tokens").value(usage.completion_tokens);
  w.key("total_tokens").value(usage.prompt_tokens + usage.completion_tokens).end_object();
}

// A token as logprobs name it: valid UTF-8 whatever its bytes.
std::string token_text(const tokenizer& tok, int32_t id) { return unicode::to_valid_utf8(tok.token_bytes(id)); }

int64_t count_code_points(std::string_view utf8) {
  return std::count_if(utf8.begin(), utf8.end(), [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; });
}

void write_bytes(json_writer& w, const tokenizer& tok, int32_t id) {
  w.key("bytes").begin_array();
  for (const char byte : tok.token_bytes(id)) w.value(int64_t(static_cast<unsigned char>(byte)));
  w.end_array();
}

void write_completion_logprobs(json_writer& w, choice_logprobs& lp) {
  const tokenizer& tok = *lp.tok;
  std::vector<std::string> chosen;  // each chosen token's text, used for tokens, top_logprobs and text_offset
  chosen.reserve(lp.samples.size());
  for (const sample_result& s : lp.samples) chosen.push_back(token_text(tok, s.token));
  w.begin_object().key("tokens").begin_array();
  for (const std::string& text : chosen) w.value(text);
  w.end_array().key("token_logprobs").begin_array();
  for (const sample_result& s : lp.samples) w.value(double(s.logprob));
  w.end_array().key("top_logprobs").begin_array();
  for (size_t n = 0; n < lp.samples.size(); ++n) {
    const sample_result& s = lp.samples[n];
    w.begin_object();
    bool chosen_listed = false;
    for (int32_t i = 0; i < s.num_top; ++i) {
      w.key(token_text(tok, s.top[size_t(i)].token)).value(double(s.top[size_t(i)].logprob));
      chosen_listed = chosen_listed || s.top[size_t(i)].token == s.token;
    }
    if (!chosen_listed) w.key(chosen[n]).value(double(s.logprob));
    w.end_object();
  }
  w.end_array().key("text_offset").begin_array();
  for (const std::string& text : chosen) {
    w.value(lp.text_offset);
    lp.text_offset += count_code_points(text);
  }
  w.end_array().end_object();
}

void write_chat_logprobs(json_writer& w, const choice_logprobs& lp) {
  const tokenizer& tok = *lp.tok;
  w.begin_object().key("content").begin_array();
  for (const sample_result& s : lp.samples) {
    w.begin_object().key("token").value(token_text(tok, s.token)).key("logprob").value(double(s.logprob));
    write_bytes(w, tok, s.token);
    w.key("top_logprobs").begin_array();
    for (int32_t i = 0; i < s.num_top; ++i) {
      const token_logprob& alternative = s.top[size_t(i)];
      w.begin_object().key("token").value(token_text(tok, alternative.token)).key("logprob").value(double(alternative.logprob));
      write_bytes(w, tok, alternative.token);
      w.end_object();
    }
    w.end_array().end_object();
  }
  w.end_array().end_object();
}

void write_choice_logprobs(json_writer& w, endpoint kind, choice_logprobs* logprobs) {
  w.key("logprobs");
  if (!logprobs) {
    w.null();
    return;
  }
  std::string json;
  write_logprobs(json, kind, *logprobs);
  w.raw(json);
}

}  // namespace

void write_logprobs(std::string& out, endpoint kind, choice_logprobs& logprobs) {
  json_writer w(out);
  if (kind == endpoint::completions) write_completion_logprobs(w, logprobs);
  else write_chat_logprobs(w, logprobs);
}

const char* openai_finish_reason(engine::finish_reason reason) {
  switch (reason) {
    case engine::finish_reason::none: return nullptr;
    case engine::finish_reason::stop: return "stop";
    case engine::finish_reason::length:
    case engine::finish_reason::deadline: return "length";
    case engine::finish_reason::cancelled:
    case engine::finish_reason::aborted:
    case engine::finish_reason::error: return "abort";
  }
  return "abort";
}

void write_error(std::string& out, const api_error& error) {
  json_writer w(out);
  w.begin_object().key("error").begin_object();
  w.key("message").value(error.message).key("type").value(error.type).key("param");
  if (error.param.empty())
    w.null();
  else
    w.value(error.param);
  w.key("code").null().end_object().end_object();
}

void write_response(std::string& out, endpoint kind, const response_meta& meta, std::span<const choice_output> choices,
                    const usage_counts& usage) {
  json_writer w(out);
  w.begin_object();
  write_header(w, kind, meta, false);
  w.key("choices").begin_array();
  for (const choice_output& choice : choices) {
    w.begin_object().key("index").value(choice.index);
    if (kind == endpoint::completions) {
      w.key("text").value(choice.text);
    } else {
      w.key("message").begin_object().key("role").value("assistant").key("content");
      if (choice.text.empty() && !choice.tool_calls.empty()) w.null();
      else w.value(choice.text);
      if (!choice.tool_calls.empty()) write_tool_calls(w, choice.tool_calls, false);
      w.end_object();
    }
    write_choice_logprobs(w, kind, choice.logprobs);
    write_finish(w, choice);
    w.end_object();
  }
  w.end_array();
  write_usage(w, usage);
  w.end_object();
}

void write_chunk(std::string& out, endpoint kind, const response_meta& meta, const choice_output& choice, bool first) {
  json_writer w(out);
  w.begin_object();
  write_header(w, kind, meta, true);
  w.key("choices").begin_array().begin_object().key("index").value(choice.index);
  if (kind == endpoint::completions) {
    w.key("text").value(choice.text);
  } else {
    w.key("delta").begin_object();
    if (first) w.key("role").value("assistant");
    if (!choice.tool_calls.empty()) write_tool_calls(w, choice.tool_calls, true);
    else w.key("content").value(choice.text);
    w.end_object();
  }
  write_choice_logprobs(w, kind, choice.logprobs);
  write_finish(w, choice);
  w.end_object().end_array().end_object();
}

void write_usage_chunk(std::string& out, endpoint kind, const response_meta& meta, const usage_counts& usage) {
  json_writer w(out);
  w.begin_object();
  write_header(w, kind, meta, true);
  w.key("choices").begin_array().end_array();
  write_usage(w, usage);
  w.end_object();
}

}  // namespace inflight::net
