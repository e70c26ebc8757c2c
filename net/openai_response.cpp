#include "openai_response.hpp"

#include "json_writer.hpp"

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

void write_finish(json_writer& w, engine::finish_reason finish) {
  w.key("finish_reason");
  if (const char* reason = openai_finish_reason(finish))
    w.value(reason);
  else
    w.null();
}

void write_usage(json_writer& w, const usage_counts& usage) {
  w.key("usage").begin_object();
  w.key("prompt_tokens").value(usage.prompt_tokens).key("completion_tokens").value(usage.completion_tokens);
  w.key("total_tokens").value(usage.prompt_tokens + usage.completion_tokens).end_object();
}

}  // namespace

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
      w.key("text").value(choice.text).key("logprobs").null();
    } else {
      w.key("message").begin_object().key("role").value("assistant").key("content").value(choice.text).end_object();
      w.key("logprobs").null();
    }
    write_finish(w, choice.finish);
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
    w.key("text").value(choice.text).key("logprobs").null();
  } else {
    w.key("delta").begin_object();
    if (first) w.key("role").value("assistant");
    w.key("content").value(choice.text).end_object().key("logprobs").null();
  }
  write_finish(w, choice.finish);
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
