// GET /v1/ws: WebSocket streaming, several requests per socket.
//
// Client -> server, one JSON text frame per message:
//   {"id": ID, "type": "completion" | "chat", ...the /v1/completions or /v1/chat/completions fields}
//   {"id": ID, "type": "cancel"}
// Server -> client:
//   {"id": ID, "type": "delta", "index": i, "text": "..."}            per piece of text (plus "logprobs",
//                                                                     as in the HTTP chunks, when asked)
//   {"id": ID, "type": "done", "choices": [{"index", "finish_reason"}], "usage": {...}}  (choices get
//                                                                     "logprobs" of tokens no delta carried)
//   {"id": ID, "type": "error", "error": {...}}                       the request was refused, or failed
//                                                                     (an engine node died under it)
// Several requests may run at once on one socket; closing it cancels them all.
#include "server_state.hpp"

#include <boost/beast/websocket.hpp>

#include <algorithm>
#include <unordered_map>

#include "json_writer.hpp"
#include "openai_response.hpp"
#include "request_log.hpp"

namespace inflight::net {

namespace {

namespace websocket = beast::websocket;

struct ws_request {
  std::vector<request_id> engine_ids;
  std::vector<generation_final> finals;
  size_t finished = 0;
  int32_t n = 1;
  endpoint kind = endpoint::completions;
  bool want_logprobs = false;
  std::vector<std::vector<sample_result>> unsent_samples;  // per choice, until its next delta frame
  std::vector<choice_logprobs> logprobs;                   // per choice
  clock::time_point started_at = clock::now();             // for the request's log line
  double ttft_ms = -1;
};

// The request's log line (request_log.hpp), once it has ended.
void log_ws_request(const server_state& server, const std::string& client_id, const ws_request& request,
                    const api_error* error) {
  request_log_entry entry;
  entry.id = "ws:" + client_id;
  entry.endpoint = "/v1/ws";
  entry.status = error ? error->status : 200;
  entry.stream = true;
  entry.choices = int(request.finals.size());
  log_outcomes(entry, request.finals, request.n);
  entry.ttft_ms = request.ttft_ms;
  entry.total_ms = std::chrono::duration<double, std::milli>(clock::now() - request.started_at).count();
  if (error) entry.error = error->message;
  write_request_log(server.options.request_log, entry);
}

struct ws_event {
  std::string client_id;  // JSON
  int32_t index = 0;
  bool final = false;
  std::string text;
  bool has_sample = false;
  sample_result sample;
  generation_final result;
};

// One WebSocket's inbox (events of all its requests), and its strand-only state.
struct ws_state : event_inbox<ws_event> {
  explicit ws_state(asio::any_io_executor strand) : event_inbox(strand), room(strand) {}
  std::deque<std::string> outgoing;  // frames for the writer
  // The reader waits on `room` while `outgoing` is long (a client that sends without reading the answers
  // must not grow it without bound); the writer cancels it as it empties the queue.
  asio::steady_timer room;
  static constexpr size_t max_outgoing = 256;
  std::unordered_map<std::string, ws_request> requests;  // by client id (JSON)
  bool reader_done = false;
  bool writer_failed = false;  // the socket is gone: frames are dropped, the reader must not wait for room
};

class ws_sink final : public generation_sink {
 public:
  ws_sink(std::shared_ptr<ws_state> state, std::string client_id, int32_t index)
      : state_(std::move(state)), client_id_(std::move(client_id)), index_(index) {}
  void on_delta(const generation_delta& delta) override {
    if (!delta.text.empty() || delta.has_sample)
      state_->push({client_id_, index_, false, delta.text, delta.has_sample, delta.sample, {}});
  }
  void on_final(const generation_final& final_event) override {
    state_->push({client_id_, index_, true, {}, false, {}, final_event});
  }

 private:
  std::shared_ptr<ws_state> state_;
  std::string client_id_;
  int32_t index_;
};

std::string ws_error_frame(const std::string& client_id, const api_error& error) {
  std::string body;
  write_error(body, error);  // {"error": {...}}
  return "{\"id\":" + (client_id.empty() ? std::string("null") : client_id) + ",\"type\":\"error\"," + body.substr(1);
}

// One message from the client: submit, cancel, or an error frame back.
void ws_message(server_state& server, ws_state& state, const std::string& text) {
  auto envelope = parse_ws_envelope(text);
  if (const auto* error = std::get_if<api_error>(&envelope)) {
    state.outgoing.push_back(ws_error_frame({}, *error));
    return;
  }
  const ws_envelope& env = std::get<ws_envelope>(envelope);
  if (env.type == ws_envelope::kind::cancel) {
    if (const auto found = state.requests.find(env.id_json); found != state.requests.end())
      server.cancel_all(found->second.engine_ids);
    return;
  }
  if (state.requests.contains(env.id_json)) {
    state.outgoing.push_back(ws_error_frame(
        env.id_json, make_error(400, "a request with this id is still running", "invalid_request_error", "id")));
    return;
  }
  if (int32_t(state.requests.size()) >= server.options.max_ws_requests) {
    state.outgoing.push_back(ws_error_frame(
        env.id_json, make_error(429,
                                "this WebSocket already runs " + std::to_string(server.options.max_ws_requests) +
                                    " requests, its limit; wait for one to finish or open another socket",
                                "rate_limit_exceeded")));
    return;
  }
  const endpoint kind = env.type == ws_envelope::kind::chat ? endpoint::chat_completions : endpoint::completions;
  parse_result parsed = parse_request(kind, text, server.options.limits);
  if (const auto* error = std::get_if<api_error>(&parsed)) {
    log_ws_request(server, env.id_json, ws_request{}, error);
    state.outgoing.push_back(ws_error_frame(env.id_json, *error));
    return;
  }
  completion_request& req = std::get<completion_request>(parsed);
  // Frames have no tool_calls delta yet, and echo is the HTTP response's: refuse rather than answer
  // without them.
  if (req.tools.active() || req.echo) {
    const bool tools = req.tools.active();
    state.outgoing.push_back(ws_error_frame(
        env.id_json, make_error(400,
                                tools ? "tool calls are served over HTTP only: POST /v1/chat/completions"
                                      : "echo is served over HTTP only: POST /v1/completions",
                                "invalid_request_error", tools ? "tools" : "echo")));
    return;
  }
  if (server.stopping) {
    state.outgoing.push_back(ws_error_frame(env.id_json, make_error(503, "the server is shutting down", "server_error")));
    return;
  }
  const std::shared_ptr<const served_model> model = server.model();
  if (!model) {
    state.outgoing.push_back(ws_error_frame(
        env.id_json, make_error(503, "no engine node has connected to the gateway yet; retry shortly", "server_error")));
    return;
  }
  ws_request& running = state.requests[env.id_json];
  running.n = req.n;
  running.kind = kind;
  running.want_logprobs = req.params.sampling.logprobs;
  ++server.active_completions;
  running.engine_ids = server.submit_choices(req, kind, [&](int32_t index) {
    return std::make_shared<ws_sink>(std::static_pointer_cast<ws_state>(state.shared_from_this()), env.id_json, index);
  });
  running.finals.resize(running.engine_ids.size());
  running.unsent_samples.resize(running.engine_ids.size());
  running.logprobs.assign(running.engine_ids.size(), choice_logprobs{model->tok.get(), {}, 0});
}

// Engine events -> frames; a request's "done" (or "error") once all its choices have ended.
void ws_drain(server_state& server, ws_state& state) {
  std::deque<ws_event> batch = state.take();
  for (ws_event& event : batch) {
    const auto found = state.requests.find(event.client_id);
    if (found == state.requests.end()) continue;
    ws_request& request = found->second;
    std::string frame;
    json_writer w(frame);
    if (!event.final) {
      std::vector<sample_result>& unsent = request.unsent_samples[size_t(event.index)];
      if (event.has_sample) unsent.push_back(event.sample);
      if (event.text.empty()) continue;  // logprobs only: they go out with the next text
      if (request.ttft_ms < 0)
        request.ttft_ms = std::chrono::duration<double, std::milli>(clock::now() - request.started_at).count();
      w.begin_object().key("id").raw(event.client_id);  // as the client wrote it
      w.key("type").value("delta").key("index").value(event.index).key("text").value(event.text);
      if (request.want_logprobs) {
        choice_logprobs& logprobs = request.logprobs[size_t(event.index)];
        logprobs.samples = unsent;
        std::string json;
        write_logprobs(json, request.kind, logprobs);
        w.key("logprobs").raw(json);
        unsent.clear();
      }
      w.end_object();
      state.outgoing.push_back(std::move(frame));
      continue;
    }
    request.finals[size_t(event.index)] = event.result;
    // A choice that failed fails the request: its other choices stop now.
    if (event.result.error != request_error::none) server.cancel_all(request.engine_ids);
    if (++request.finished < request.finals.size()) continue;
    server.forget(request.engine_ids);
    --server.active_completions;
    const auto failed = std::find_if(request.finals.begin(), request.finals.end(),
                                     [](const generation_final& f) { return f.error != request_error::none; });
    if (failed != request.finals.end()) {
      const api_error error = engine_error(*failed);
      log_ws_request(server, event.client_id, request, &error);
      state.outgoing.push_back(ws_error_frame(event.client_id, error));
    } else {
      log_ws_request(server, event.client_id, request, nullptr);
      usage_counts usage;
      w.begin_object().key("id").raw(event.client_id);
      w.key("type").value("done").key("choices").begin_array();
      for (size_t c = 0; c < request.finals.size(); ++c) {
        w.begin_object().key("index").value(int64_t(c)).key("finish_reason").value(openai_finish_reason(request.finals[c].reason));
        if (request.want_logprobs) {  // of the tokens after the last delta (an end-of-generation token)
          request.logprobs[c].samples = request.unsent_samples[c];
          std::string json;
          write_logprobs(json, request.kind, request.logprobs[c]);
          w.key("logprobs").raw(json);
        }
        w.end_object();
        if (c % size_t(request.n) == 0) usage.prompt_tokens += request.finals[c].prompt_tokens;
        usage.completion_tokens += request.finals[c].completion_tokens;
      }
      w.end_array().key("usage").begin_object().key("prompt_tokens").value(usage.prompt_tokens);
      w.key("completion_tokens").value(usage.completion_tokens);
      w.key("total_tokens").value(usage.prompt_tokens + usage.completion_tokens).end_object().end_object();
      state.outgoing.push_back(std::move(frame));
    }
    state.requests.erase(found);
  }
}

awaitable<void> ws_reader(server_state& server, websocket::stream<beast::tcp_stream>& ws, std::shared_ptr<ws_state> state) {
  beast::flat_buffer buffer;
  for (;;) {
    beast::error_code ec;
    while (state->outgoing.size() >= ws_state::max_outgoing && !state->writer_failed) {
      state->room.expires_at(asio::steady_timer::time_point::max());
      co_await state->room.async_wait(asio::redirect_error(use_awaitable, ec));
    }
    co_await ws.async_read(buffer, asio::redirect_error(use_awaitable, ec));
    if (ec) break;  // closed by the client, or the connection is gone
    const std::string text = beast::buffers_to_string(buffer.data());
    buffer.consume(buffer.size());
    ws_message(server, *state, text);
    state->wake.cancel();
  }
  // The client is gone: whatever it asked for stops now; the writer waits for the finals.
  for (auto& [client_id, request] : state->requests) server.cancel_all(request.engine_ids);
  state->reader_done = true;
  state->wake.cancel();
}

}  // namespace

awaitable<void> websocket_session(server_state& server, beast::tcp_stream stream, http_request request) {
  websocket::stream<beast::tcp_stream> ws(std::move(stream));
  beast::get_lowest_layer(ws).expires_never();  // the HTTP timeout would kill a quiet socket
  ws.set_option(websocket::stream_base::timeout::suggested(beast::role_type::server));
  ws.read_message_max(server.options.body_limit);
  beast::error_code ec;
  co_await ws.async_accept(request, asio::redirect_error(use_awaitable, ec));
  if (ec) co_return;
  ws.text(true);
  auto state = std::make_shared<ws_state>(co_await asio::this_coro::executor);
  asio::co_spawn(state->strand, ws_reader(server, ws, state), asio::detached);
  // The writer: this coroutine. It owns `ws`, so it returns only once the reader is done with it and
  // every request's final event has come (the sinks post onto this strand until then).
  while (!(state->reader_done && state->requests.empty())) {
    ws_drain(server, *state);
    while (!state->outgoing.empty()) {
      const std::string frame = std::move(state->outgoing.front());
      state->outgoing.pop_front();
      if (state->outgoing.size() < ws_state::max_outgoing) state->room.cancel();
      if (state->writer_failed) continue;
      co_await ws.async_write(asio::buffer(frame), asio::redirect_error(use_awaitable, ec));
      if (ec) {
        state->writer_failed = true;  // the reader sees the connection go too
        state->room.cancel();
      }
      ws_drain(server, *state);
    }
    state->room.cancel();
    if (state->reader_done && state->requests.empty()) break;
    if (!state->empty()) continue;
    state->wake.expires_at(asio::steady_timer::time_point::max());
    co_await state->wake.async_wait(asio::redirect_error(use_awaitable, ec));
  }
  if (ws.is_open()) co_await ws.async_close(websocket::close_code::normal, asio::redirect_error(use_awaitable, ec));
}

}  // namespace inflight::net
