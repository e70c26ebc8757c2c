// POST /v1/completions and /v1/chat/completions: parse, submit one engine request per choice, and answer
// whole or as server-sent events (chunks, the optional usage chunk, [DONE]). A refusal before anything was
// streamed gets its HTTP status (400, 429, 502, 503, ...); a failure after the stream started (an engine
// node died under it) gets an SSE event {"error": {...}}, the other choices are cancelled, then [DONE].
// A client that disconnects has its requests cancelled at once (a readability watcher on the socket).
#include "server_state.hpp"

#include <sys/socket.h>

#include <cerrno>
#include <ctime>

#include "inflight/tokenizer.hpp"
#include "openai_response.hpp"
#include "request_log.hpp"

namespace inflight::net {

namespace {

// What one choice's engine request reports, queued for the connection's coroutine.
struct choice_event {
  int32_t index = 0;
  bool final = false;
  clock::time_point at = clock::now();  // when the engine produced it (for the latency metrics)
  std::string text;
  bool has_sample = false;  // the token's logprobs, when the request asked for them
  sample_result sample;
  generation_final result;  // when final
};

// One HTTP completion's inbox.
struct exchange_state : event_inbox<choice_event> {
  using event_inbox::event_inbox;
  bool finished = false;  // strand-only: the exchange is over (see watch_for_disconnect)
};

class choice_sink final : public generation_sink {
 public:
  choice_sink(std::shared_ptr<exchange_state> state, int32_t index) : state_(std::move(state)), index_(index) {}
  void on_delta(const generation_delta& delta) override {
    // A token that released no text still carries its logprobs, when asked for.
    if (!delta.text.empty() || delta.has_sample)
      state_->push({index_, false, clock::now(), delta.text, delta.has_sample, delta.sample, {}});
  }
  void on_final(const generation_final& final_event) override {
    state_->push({index_, true, clock::now(), {}, false, {}, final_event});
  }

 private:
  std::shared_ptr<exchange_state> state_;
  int32_t index_;
};

// Waits for the socket to become readable while the request runs: end of stream there means the client
// closed the connection (a pipelined next request would be data instead), so its requests are
// cancelled at once rather than at the next failed write. The peek never blocks: by the time this
// handler runs, the session may already have read what made the socket readable (the next request on a
// kept-alive connection), and the request this watch was for may be over.
void watch_for_disconnect(server_state& server, beast::tcp_stream& stream, const std::shared_ptr<exchange_state>& state,
                          const std::vector<request_id>& ids) {
  tcp::socket& socket = stream.socket();
  socket.async_wait(tcp::socket::wait_read, [&server, &stream, &socket, state, ids](beast::error_code ec) {
    // `finished` is set on this strand before the session moves on, so while it is false `stream` lives.
    if (ec || state->finished) return;
    char byte;
    const ssize_t n = ::recv(socket.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n > 0) return;  // data: a pipelined request, not a disconnect
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
      watch_for_disconnect(server, stream, state, ids);  // nothing there after all: keep watching
      return;
    }
    server.cancel_all(ids);  // end of stream, or the connection failed
    state->wake.cancel();
  });
}

}  // namespace

awaitable<bool> completion_exchange(server_state& server, beast::tcp_stream& stream, http_request& request,
                                    endpoint kind) {
  const server_options& options = server.options;
  server_metrics& metrics = server.metrics;
  const bool keep_alive = request.keep_alive();
  const clock::time_point started_at = clock::now();
  // The request's log line, written however the exchange ends (request_log.hpp).
  request_log_entry log;
  log.endpoint = kind == endpoint::completions ? "/v1/completions" : "/v1/chat/completions";
  struct log_at_exit {
    request_log_format format;
    request_log_entry& entry;
    clock::time_point started_at;
    ~log_at_exit() {
      entry.total_ms = std::chrono::duration<double, std::milli>(clock::now() - started_at).count();
      write_request_log(format, entry);
    }
  } log_scope{options.request_log, log, started_at};
  const auto log_refusal = [&log](const api_error& error) {
    log.status = error.status;
    log.error = error.message;
  };
  parse_result parsed = parse_request(kind, request.body(), options.limits);
  if (const auto* error = std::get_if<api_error>(&parsed)) {
    log_refusal(*error);
    metrics.record_rejection(error->status);
    co_await send_error(server, stream, *error, keep_alive);
    co_return true;
  }
  completion_request& req = std::get<completion_request>(parsed);
  log.stream = req.stream;
  const std::shared_ptr<const served_model> model = server.model();
  if (!model) {
    const api_error error = make_error(503, "no engine node has connected to the gateway yet; retry shortly", "server_error");
    log_refusal(error);
    metrics.record_rejection(503);
    co_await send_error(server, stream, error, keep_alive);
    co_return true;
  }
  const std::string model_name = server.model_name(*model);
  if (!req.model.empty() && req.model != model_name) {
    const api_error error = make_error(404, "the model '" + req.model + "' does not exist", "not_found_error", "model");
    log_refusal(error);
    metrics.record_rejection(404);
    co_await send_error(server, stream, error, keep_alive);
    co_return true;
  }
  if (server.stopping) {
    const api_error error = make_error(503, "the server is shutting down", "server_error");
    log_refusal(error);
    co_await send_error(server, stream, error, false);
    co_return false;
  }

  ++server.active_completions;
  struct completion_scope {
    std::atomic<int>& count;
    ~completion_scope() { --count; }
  } scope{server.active_completions};

  auto state = std::make_shared<exchange_state>(co_await asio::this_coro::executor);
  const std::vector<request_id> ids =
      server.submit_choices(req, kind, [&](int32_t index) { return std::make_shared<choice_sink>(state, index); });
  watch_for_disconnect(server, stream, state, ids);

  const size_t num_choices = ids.size();
  std::vector<std::string> texts(num_choices);
  // Logprobs, when asked for: every token's for a whole response, those not yet sent for a stream.
  const bool want_logprobs = req.params.sampling.logprobs;
  std::vector<std::vector<sample_result>> samples(num_choices);
  std::vector<choice_logprobs> logprobs(num_choices, choice_logprobs{model->tok.get(), {}, 0});
  std::vector<generation_final> finals(num_choices);
  std::vector<bool> started(num_choices, false);
  std::vector<clock::time_point> last_text_at(num_choices);
  size_t finished = 0;
  bool streaming_started = false, client_gone = false, failed_mid_stream = false, any_failed = false;
  const std::string id =
      std::string(kind == endpoint::completions ? "cmpl-" : "chatcmpl-") + std::to_string(++server.next_response_id);
  log.id = id;
  log.choices = int(num_choices);
  const response_meta meta{id, int64_t(std::time(nullptr)), model_name};
  std::string chunk;
  // echo (completions): each choice's text starts with its prompt, as written (or its ids decoded).
  std::vector<std::string> echoes;
  if (req.echo) {
    for (size_t c = 0; c < num_choices; ++c) {
      const size_t p = c / size_t(req.n);
      echoes.push_back(p < req.prompt_texts.size() ? req.prompt_texts[p]
                                                   : model->tok->decode(req.prompt_tokens[p - req.prompt_texts.size()]));
    }
  }
  // Tool calls (chat with tools): auto streams text until a call may start and holds the rest; required and
  // named hold everything. Each finished choice's output is then parsed into calls (tool_calls.hpp).
  const tool_spec& tools = req.tools;
  std::vector<tool_text_splitter> splitters(tools.active() ? num_choices : 0);
  std::vector<std::vector<tool_call>> calls(num_choices);
  int64_t next_call = 0;
  const auto parse_calls = [&](size_t c) -> std::string {  // the choice's content beside its calls
    const auto parsed = parse_tool_output(tools, texts[c], [&] { return id + "-call-" + std::to_string(++next_call); });
    if (!parsed) return texts[c];
    calls[c] = parsed->calls;
    return parsed->content;
  };

  // Streams SSE data lines; returns false when the client is gone.
  auto write_event = [&](std::string_view json) -> awaitable<bool> {
    std::string line = "data: ";
    line.append(json);
    line.append("\n\n");
    beast::error_code ec;
    stream.expires_after(options.read_timeout);
    co_await asio::async_write(stream, http::make_chunk(asio::buffer(line)), asio::redirect_error(use_awaitable, ec));
    co_return !ec;
  };

  while (finished < num_choices) {
    std::deque<choice_event> batch = state->take();
    if (batch.empty()) {
      state->wake.expires_at(asio::steady_timer::time_point::max());
      beast::error_code ec;
      co_await state->wake.async_wait(asio::redirect_error(use_awaitable, ec));
      continue;
    }
    for (choice_event& event : batch) {
      const size_t c = size_t(event.index);
      const bool failed = event.final && event.result.error != request_error::none;
      if (event.final) {
        finals[c] = event.result;
        ++finished;
        // One choice failed (e.g. refused with 429): the response fails, so the other choices stop now.
        if (failed && !any_failed) server.cancel_all(ids);
        any_failed = any_failed || failed;
        if (!failed) {
          metrics.record_finish(event.result.reason);
          metrics.observe_end_to_end(std::chrono::duration<double>(event.at - started_at).count());
        }
      } else {
        if (event.has_sample) samples[c].push_back(event.sample);
        if (event.text.empty()) continue;  // logprobs only: they go out with the next text
        texts[c] += event.text;
        if (last_text_at[c] == clock::time_point{}) {
          metrics.observe_time_to_first_token(std::chrono::duration<double>(event.at - started_at).count());
          if (log.ttft_ms < 0) log.ttft_ms = std::chrono::duration<double, std::milli>(event.at - started_at).count();
        }
        else
          metrics.observe_inter_token_latency(std::chrono::duration<double>(event.at - last_text_at[c]).count());
        last_text_at[c] = event.at;
      }
      if (!req.stream || client_gone || failed_mid_stream) continue;
      // A refusal before anything was streamed still gets a proper HTTP error (after the loop), and then
      // nothing is streamed: the other choices' events, until their cancelled finals come, are dropped.
      if (!streaming_started) {
        if (any_failed) continue;
        streaming_started = true;
        http::response<http::empty_body> head{http::status::ok, 11};
        head.set(http::field::server, "inflight");
        head.set(http::field::content_type, "text/event-stream");
        head.set(http::field::cache_control, "no-cache");
        head.keep_alive(keep_alive);
        head.chunked(true);
        http::response_serializer<http::empty_body> serializer{head};
        beast::error_code ec;
        co_await http::async_write_header(stream, serializer, asio::redirect_error(use_awaitable, ec));
        if (ec) client_gone = true;
      }
      if (client_gone) continue;
      if (failed) {
        // Too late for a status: the error goes out as an event of its own (as vLLM's streams end), the
        // response's other choices stop, and [DONE] follows once they have.
        failed_mid_stream = true;
        metrics.record_finish(engine::finish_reason::error);
        log.error = engine_error(event.result).message;
        if (!co_await write_event(error_json(engine_error(event.result)))) client_gone = true;
        server.cancel_all(ids);
        continue;
      }
      std::string text = event.final ? std::string() : std::move(event.text);
      if (tools.active()) {
        if (!event.final) {
          // Auto: what cannot start a call goes out now; required and named: nothing until the end.
          text = tools.mode == tool_mode::automatic ? splitters[c].feed(text) : std::string();
          if (text.empty()) continue;  // held (its logprobs go out with the text they belong to)
        } else {
          // The held text decides: calls (one chunk for them), or text after all (sent before the finish).
          // (With calls, the text streamed before them was the content; what the model wrote around the
          // blocks after the first one is dropped from a stream.)
          parse_calls(c);
          const bool any_calls = !calls[c].empty();
          const std::string rest = any_calls                             ? std::string()
                                   : tools.mode == tool_mode::automatic ? splitters[c].held()
                                                                         : texts[c];
          if (any_calls || !rest.empty()) {
            logprobs[c].samples = samples[c];
            choice_output pending{event.index, rest, engine::finish_reason::none, want_logprobs ? &logprobs[c] : nullptr,
                                  calls[c]};
            chunk.clear();
            write_chunk(chunk, kind, meta, pending, !started[c]);
            samples[c].clear();
            started[c] = true;
            if (!co_await write_event(chunk)) client_gone = true;
          }
        }
      }
      if (!echoes.empty() && !started[c]) text.insert(0, echoes[c]);  // the choice's first chunk
      logprobs[c].samples = samples[c];
      choice_output out{event.index, text, event.final ? event.result.reason : engine::finish_reason::none,
                        want_logprobs ? &logprobs[c] : nullptr, {}, !calls[c].empty()};
      chunk.clear();
      write_chunk(chunk, kind, meta, out, !started[c]);
      samples[c].clear();
      started[c] = true;
      if (!co_await write_event(chunk)) client_gone = true;
    }
    if (client_gone) server.cancel_all(ids);  // the finals still come: wait for them, the blocks are freed by then
  }
  server.forget(ids);
  state->finished = true;  // the disconnect watcher stands down
  log_outcomes(log, finals, req.n);
  if (client_gone && log.error.empty()) log.error = "the client disconnected";

  // The first error, if any choice failed before or while generating.
  if (!streaming_started) {
    for (const generation_final& result : finals) {
      if (result.error == request_error::none) continue;
      log_refusal(engine_error(result));
      metrics.record_rejection(engine_error(result).status);
      co_await send_error(server, stream, engine_error(result), keep_alive);
      co_return !client_gone;
    }
  }
  if (client_gone) co_return false;

  usage_counts usage;
  for (size_t c = 0; c < num_choices; ++c) {
    if (c % size_t(req.n) == 0) usage.prompt_tokens += finals[c].prompt_tokens;  // once per prompt
    usage.completion_tokens += finals[c].completion_tokens;
  }
  if (req.stream) {
    if (req.include_usage && !failed_mid_stream) {
      chunk.clear();
      write_usage_chunk(chunk, kind, meta, usage);
      if (!co_await write_event(chunk)) co_return false;
    }
    if (!co_await write_event("[DONE]")) co_return false;
    beast::error_code ec;
    co_await asio::async_write(stream, http::make_chunk_last(), asio::redirect_error(use_awaitable, ec));
    co_return !ec;
  }
  std::vector<choice_output> choices;
  std::vector<std::string> contents(num_choices);
  for (size_t c = 0; c < num_choices; ++c) {
    logprobs[c].samples = samples[c];
    contents[c] = tools.active() ? parse_calls(c) : echoes.empty() ? std::move(texts[c]) : echoes[c] + texts[c];
    choices.push_back({int32_t(c), contents[c], finals[c].reason, want_logprobs ? &logprobs[c] : nullptr, calls[c],
                       !calls[c].empty()});
  }
  std::string body;
  write_response(body, kind, meta, choices, usage);
  co_await send_response(server, stream, http::status::ok, std::move(body), keep_alive);
  co_return true;
}

}  // namespace inflight::net
