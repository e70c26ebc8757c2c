// One coroutine per connection, on its own strand; one engine request per choice. The engine's sinks run
// on CAF threads: they queue events in the request's shared state and post a wake-up onto the
// connection's strand, where the coroutine drains the queue (docs/caf-0.17.md §7: never block an io
// thread on CAF).
#include <utility>  // before asio: Boost 1.74's awaitable.hpp uses std::exchange without it (g++ 12, C++20)

#include <sys/socket.h>

#include <cerrno>

#include "http_server.hpp"

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>

#include <atomic>
#include <condition_variable>
#include <ctime>
#include <deque>
#include <algorithm>
#include <mutex>
#include <set>
#include <unordered_map>
#include <stdexcept>
#include <string_view>
#include <thread>
#include <vector>

#include "inflight/detokenizer.hpp"
#include "inflight/engine.hpp"
#include "inflight/tokenizer.hpp"
#include "json_writer.hpp"
#include "openai_response.hpp"
#include "server_metrics.hpp"
#include "web_assets.hpp"

namespace inflight::net {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;
using asio::awaitable;
using asio::use_awaitable;

namespace {

// What one choice's engine request reports, queued for the connection's coroutine.
using clock = std::chrono::steady_clock;

struct choice_event {
  int32_t index = 0;
  bool final = false;
  clock::time_point at = clock::now();  // when the engine produced it (for the latency metrics)
  std::string text;
  bool has_sample = false;  // the token's logprobs, when the request asked for them
  sample_result sample;
  generation_final result;  // when final
};

// Engine events for one coroutine, shared by the sinks (CAF threads) and the coroutine (its strand): a
// sink pushes under the lock and posts a wake-up onto the strand; the coroutine takes the batch queued so
// far, or waits on `wake` when there is none. Owned through shared_ptr (the posted wake-up holds one).
template <class Event>
struct event_inbox : std::enable_shared_from_this<event_inbox<Event>> {
  explicit event_inbox(asio::any_io_executor strand) : strand(strand), wake(strand) {}
  asio::any_io_executor strand;
  asio::steady_timer wake;  // waited on by the coroutine, cancelled to wake it

  void push(Event event) {
    {
      std::lock_guard lock(mutex_);
      events_.push_back(std::move(event));
    }
    asio::post(strand, [self = this->shared_from_this()]() { self->wake.cancel(); });
  }
  std::deque<Event> take() {
    std::deque<Event> batch;
    std::lock_guard lock(mutex_);
    batch.swap(events_);
    return batch;
  }
  bool empty() {
    std::lock_guard lock(mutex_);
    return events_.empty();
  }

 private:
  std::mutex mutex_;
  std::deque<Event> events_;
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

std::string error_json(const api_error& error) {
  std::string body;
  write_error(body, error);
  return body;
}

api_error make_error(int status, std::string message, std::string type = "invalid_request_error", std::string param = {}) {
  return api_error{status, std::move(message), std::move(type), std::move(param)};
}

// The HTTP status and error for a request the engine ended without generating.
api_error engine_error(const generation_final& result) {
  switch (result.error) {
    case request_error::queue_full: return make_error(429, result.message, "rate_limit_exceeded");
    case request_error::internal: return make_error(500, result.message, "server_error");
    default: return make_error(400, result.message);
  }
}

}  // namespace

struct http_server::impl {
  inference_engine& engine;
  std::shared_ptr<const tokenizer> tok;
  server_options options;
  asio::io_context io{1};
  tcp::acceptor acceptor;
  std::thread thread;
  std::atomic<bool> stopping{false};
  std::atomic<int> active_completions{0};  // from submit to the last byte of the response
  server_metrics metrics;  // io thread only
  // The engine's counters, refreshed off the io thread (a blocking actor round-trip) once a second.
  std::thread stats_thread;
  std::mutex stats_mutex;
  std::condition_variable stats_wakeup;
  bool stats_stop = false;
  engine_stats latest_stats;

  void refresh_stats() {
    std::unique_lock lock(stats_mutex);
    while (!stats_stop) {
      lock.unlock();
      const engine_stats snapshot = engine.stats();
      lock.lock();
      latest_stats = snapshot;
      stats_wakeup.wait_for(lock, std::chrono::seconds(1), [this] { return stats_stop; });
    }
  }
  std::mutex live_mutex;
  std::set<request_id> live;  // engine requests in flight, cancelled by stop()
  int64_t next_response_id = 0;

  impl(inference_engine& e, std::shared_ptr<const tokenizer> t, const server_options& o)
      : engine(e), tok(std::move(t)), options(o), acceptor(asio::make_strand(io)) {
    if (!tok) throw std::invalid_argument("http_server: no tokenizer");
    beast::error_code ec;
    const tcp::endpoint at(asio::ip::make_address(options.host, ec), options.port);
    if (ec) throw std::runtime_error("invalid listen address '" + options.host + "'");
    acceptor.open(at.protocol(), ec);
    if (!ec) acceptor.set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) acceptor.bind(at, ec);
    if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
    if (ec)
      throw std::runtime_error("cannot listen on " + options.host + ":" + std::to_string(options.port) + ": " +
                               ec.message());
  }

  awaitable<void> accept_loop() {
    for (;;) {
      beast::error_code ec;
      tcp::socket socket = co_await acceptor.async_accept(asio::make_strand(io), asio::redirect_error(use_awaitable, ec));
      if (ec) co_return;  // closed by stop()
      socket.set_option(tcp::no_delay(true), ec);  // small SSE chunks go out at once
      asio::co_spawn(socket.get_executor(), session(beast::tcp_stream(std::move(socket))), asio::detached);
    }
  }

  awaitable<void> send(beast::tcp_stream& stream, http::status status, std::string body, bool keep_alive,
                       std::string_view content_type = "application/json", int retry_after = 0) {
    http::response<http::string_body> response{status, 11};
    response.set(http::field::server, "inflight");
    response.set(http::field::content_type, content_type);
    if (retry_after > 0) response.set(http::field::retry_after, std::to_string(retry_after));
    response.keep_alive(keep_alive);
    response.body() = std::move(body);
    response.prepare_payload();
    beast::error_code ec;
    stream.expires_after(options.read_timeout);
    co_await http::async_write(stream, response, asio::redirect_error(use_awaitable, ec));
  }

  awaitable<void> send_error(beast::tcp_stream& stream, const api_error& error, bool keep_alive) {
    co_await send(stream, http::status(error.status), error_json(error), keep_alive, "application/json",
                  error.status == 429 ? 1 : 0);
  }

  awaitable<void> session(beast::tcp_stream stream) {
    beast::flat_buffer buffer;
    for (;;) {
      http::request_parser<http::string_body> parser;
      parser.header_limit(uint32_t(options.header_limit));
      parser.body_limit(options.body_limit);
      beast::error_code ec;
      stream.expires_after(options.read_timeout);
      co_await http::async_read(stream, buffer, parser, asio::redirect_error(use_awaitable, ec));
      if (ec == http::error::body_limit) {
        co_await send_error(stream, make_error(413, "the request body is larger than " + std::to_string(options.body_limit) + " bytes"), false);
        break;
      }
      if (ec == http::error::header_limit) {
        co_await send_error(stream, make_error(431, "the request headers are too large"), false);
        break;
      }
      if (ec) break;  // closed, timed out, or not HTTP
      http::request<http::string_body> request = parser.release();
      if (!authorized(request)) {
        co_await send_error(stream, make_error(401, "a valid API key is required (Authorization: Bearer <key>)", "authentication_error"), request.keep_alive());
        if (!request.keep_alive()) break;
        continue;
      }
      if (websocket::is_upgrade(request)) {
        if (std::string_view(request.target().data(), request.target().size()).starts_with("/v1/ws")) co_return co_await ws_session(std::move(stream), std::move(request));
        co_await send_error(stream, make_error(404, "WebSocket endpoint is /v1/ws", "not_found_error"), false);
        break;
      }
      const bool keep_alive = request.keep_alive();
      const bool open = co_await route(stream, request);
      if (!open || !keep_alive) break;
    }
    beast::error_code ec;
    stream.socket().shutdown(tcp::socket::shutdown_send, ec);
  }

  bool authorized(const http::request<http::string_body>& request) const {
    if (options.api_keys.empty()) return true;
    const std::string_view target(request.target().data(), request.target().size());
    const std::string_view path = target.substr(0, target.find('?'));
    if (path == "/health" || path == "/ready" || path == "/" || path == "/index.html") return true;
    const auto matches = [this](std::string_view key) {
      return std::find(options.api_keys.begin(), options.api_keys.end(), key) != options.api_keys.end();
    };
    const std::string_view header(request[http::field::authorization].data(), request[http::field::authorization].size());
    if (header.starts_with("Bearer ") && matches(header.substr(7))) return true;
    if (websocket::is_upgrade(request)) {  // browsers cannot set headers on a WebSocket
      const size_t at = target.find("api_key=");
      if (at != std::string_view::npos) {
        std::string_view key = target.substr(at + 8);
        key = key.substr(0, key.find('&'));
        return matches(key);
      }
    }
    return false;
  }

  // Returns false when the connection must close (the client went away mid-response).
  awaitable<bool> route(beast::tcp_stream& stream, http::request<http::string_body>& request) {
    const std::string_view target(request.target().data(), request.target().size());
    const std::string_view path = target.substr(0, target.find('?'));
    const bool keep_alive = request.keep_alive();
    const bool get = request.method() == http::verb::get, post = request.method() == http::verb::post;
    if (path == "/" || path == "/index.html") {
      if (!get) co_await send_error(stream, make_error(405, "use GET /"), keep_alive);
      else co_await send(stream, http::status::ok, std::string(chat_page_html), keep_alive, "text/html; charset=utf-8");
    } else if (path == "/health" || path == "/ready") {
      // Both: the server only listens once the model is loaded and the engine runs.
      if (!get) co_await send_error(stream, make_error(405, "use GET " + std::string(path)), keep_alive);
      else co_await send(stream, http::status::ok, R"({"status":"ok"})", keep_alive);
    } else if (path == "/v1/models") {
      if (!get) co_await send_error(stream, make_error(405, "use GET /v1/models"), keep_alive);
      else co_await send(stream, http::status::ok, models_json(), keep_alive);
    } else if (path == "/metrics") {
      if (!get) {
        co_await send_error(stream, make_error(405, "use GET /metrics"), keep_alive);
      } else {
        {
          std::lock_guard lock(stats_mutex);
          metrics.set_engine_stats(latest_stats);
        }
        co_await send(stream, http::status::ok, metrics.render(), keep_alive, "text/plain; version=0.0.4");
      }
    } else if (path == "/tokenize" || path == "/detokenize") {
      if (!post) co_await send_error(stream, make_error(405, "use POST " + std::string(path)), keep_alive);
      else if (path == "/tokenize") co_await tokenize(stream, request.body(), keep_alive);
      else co_await detokenize(stream, request.body(), keep_alive);
    } else if (path == "/v1/completions" || path == "/v1/chat/completions") {
      if (!post) {
        co_await send_error(stream, make_error(405, "use POST " + std::string(path)), keep_alive);
      } else {
        const endpoint kind = path == "/v1/completions" ? endpoint::completions : endpoint::chat_completions;
        co_return co_await completion(stream, request, kind);
      }
    } else {
      co_await send_error(stream, make_error(404, "no such endpoint: " + std::string(path), "not_found_error"), keep_alive);
    }
    co_return true;
  }

  // The ids a completion with this prompt would start from (special-token text parsed, BOS as the
  // model's metadata says), so clients can count before they ask.
  awaitable<void> tokenize(beast::tcp_stream& stream, const std::string& body, bool keep_alive) {
    auto parsed = parse_tokenize_request(body);
    if (const auto* error = std::get_if<api_error>(&parsed)) co_return co_await send_error(stream, *error, keep_alive);
    const std::vector<int32_t> ids = tok->encode(std::get<tokenize_request>(parsed).prompt, true);
    std::string out;
    json_writer w(out);
    w.begin_object().key("tokens").begin_array();
    for (const int32_t id : ids) w.value(id);
    w.end_array().key("count").value(int64_t(ids.size())).end_object();
    co_await send(stream, http::status::ok, std::move(out), keep_alive);
  }

  awaitable<void> detokenize(beast::tcp_stream& stream, const std::string& body, bool keep_alive) {
    auto parsed = parse_detokenize_request(body);
    if (const auto* error = std::get_if<api_error>(&parsed)) co_return co_await send_error(stream, *error, keep_alive);
    std::string text;
    incremental_detokenizer detokenizer(tok);  // valid UTF-8 out, whatever the ids
    for (const int32_t id : std::get<detokenize_request>(parsed).tokens) {
      if (id >= tok->vocab_size()) {
        co_return co_await send_error(stream, make_error(400, "token id " + std::to_string(id) + " is out of range", "invalid_request_error", "tokens"), keep_alive);
      }
      detokenizer.push(id, text);
    }
    detokenizer.flush(text);
    std::string out;
    json_writer w(out);
    w.begin_object().key("prompt").value(text).end_object();
    co_await send(stream, http::status::ok, std::move(out), keep_alive);
  }

  std::string models_json() const {
    std::string body;
    json_writer w(body);
    w.begin_object().key("object").value("list").key("data").begin_array().begin_object();
    w.key("id").value(options.model_name).key("object").value("model").key("owned_by").value("inflight");
    w.end_object().end_array().end_object();
    return body;
  }

  // One engine request per (prompt, n) pair, each with the sink make_sink(choice index) gives; the choice
  // index is prompt * n + k, as OpenAI numbers choices. Returns the engine ids, in choice order.
  template <class MakeSink>
  std::vector<request_id> submit_choices(const completion_request& req, endpoint kind, MakeSink make_sink) {
    std::vector<request_id> ids;
    const size_t num_prompts = kind == endpoint::completions ? req.prompt_texts.size() + req.prompt_tokens.size() : 1;
    for (size_t p = 0; p < num_prompts; ++p) {
      for (int32_t k = 0; k < req.n; ++k) {
        generation_params params = req.params;
        if (kind == endpoint::chat_completions) params.messages = req.messages;
        else if (p < req.prompt_texts.size()) params.prompt = req.prompt_texts[p];
        else params.prompt_tokens = req.prompt_tokens[p - req.prompt_texts.size()];
        // n > 1 with a seed: each choice its own draw, reproducibly.
        if (params.sampling.seed && k > 0) *params.sampling.seed += uint64_t(k);
        const request_id id = engine.submit(std::move(params), make_sink(int32_t(p) * req.n + k));
        ids.push_back(id);
        std::lock_guard lock(live_mutex);
        live.insert(id);
      }
    }
    return ids;
  }

  void forget(const std::vector<request_id>& ids) {
    std::lock_guard lock(live_mutex);
    for (const request_id id : ids) live.erase(id);
  }

  void cancel_all(const std::vector<request_id>& ids) {
    for (const request_id id : ids) engine.cancel(id);
  }

  awaitable<bool> completion(beast::tcp_stream& stream, http::request<http::string_body>& request, endpoint kind) {
    const bool keep_alive = request.keep_alive();
    const clock::time_point started_at = clock::now();
    parse_result parsed = parse_request(kind, request.body(), options.limits);
    if (const auto* error = std::get_if<api_error>(&parsed)) {
      metrics.record_rejection(error->status);
      co_await send_error(stream, *error, keep_alive);
      co_return true;
    }
    completion_request& req = std::get<completion_request>(parsed);
    if (!req.model.empty() && req.model != options.model_name) {
      metrics.record_rejection(404);
      co_await send_error(stream, make_error(404, "the model '" + req.model + "' does not exist", "not_found_error", "model"), keep_alive);
      co_return true;
    }
    if (stopping) {
      co_await send_error(stream, make_error(503, "the server is shutting down", "server_error"), false);
      co_return false;
    }

    ++active_completions;
    struct completion_scope {
      std::atomic<int>& count;
      ~completion_scope() { --count; }
    } scope{active_completions};

    auto state = std::make_shared<exchange_state>(co_await asio::this_coro::executor);
    const std::vector<request_id> ids =
        submit_choices(req, kind, [&](int32_t index) { return std::make_shared<choice_sink>(state, index); });
    watch_for_disconnect(stream, state, ids);

    const size_t num_choices = ids.size();
    std::vector<std::string> texts(num_choices);
    // Logprobs, when asked for: every token's for a whole response, those not yet sent for a stream.
    const bool want_logprobs = req.params.sampling.logprobs;
    std::vector<std::vector<sample_result>> samples(num_choices);
    std::vector<choice_logprobs> logprobs(num_choices, choice_logprobs{tok.get(), {}, 0});
    std::vector<generation_final> finals(num_choices);
    std::vector<bool> started(num_choices, false);
    std::vector<clock::time_point> last_text_at(num_choices);
    size_t finished = 0;
    bool streaming_started = false, client_gone = false;
    const std::string id = std::string(kind == endpoint::completions ? "cmpl-" : "chatcmpl-") + std::to_string(++next_response_id);
    const response_meta meta{id, int64_t(std::time(nullptr)), options.model_name};
    std::string chunk;

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
        if (event.final) {
          finals[c] = event.result;
          ++finished;
          if (event.result.error == request_error::none) {
            metrics.record_finish(event.result.reason);
            metrics.observe_end_to_end(std::chrono::duration<double>(event.at - started_at).count());
          }
        } else {
          if (event.has_sample) samples[c].push_back(event.sample);
          if (event.text.empty()) continue;  // logprobs only: they go out with the next text
          texts[c] += event.text;
          if (last_text_at[c] == clock::time_point{})
            metrics.observe_time_to_first_token(std::chrono::duration<double>(event.at - started_at).count());
          else
            metrics.observe_inter_token_latency(std::chrono::duration<double>(event.at - last_text_at[c]).count());
          last_text_at[c] = event.at;
        }
        if (!req.stream || client_gone) continue;
        // A refusal before anything was streamed still gets a proper HTTP error.
        if (!streaming_started) {
          if (event.final && event.result.error != request_error::none) continue;
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
        logprobs[c].samples = samples[c];
        choice_output out{event.index, event.final ? std::string_view() : std::string_view(event.text),
                          event.final ? event.result.reason : engine::finish_reason::none,
                          want_logprobs ? &logprobs[c] : nullptr};
        chunk.clear();
        write_chunk(chunk, kind, meta, out, !started[c]);
        samples[c].clear();
        started[c] = true;
        if (!co_await write_event(chunk)) client_gone = true;
      }
      if (client_gone) cancel_all(ids);  // the finals still come: wait for them, the blocks are freed by then
    }
    forget(ids);
    state->finished = true;  // the disconnect watcher stands down

    // The first error, if any choice failed before or while generating.
    for (const generation_final& result : finals) {
      if (result.error == request_error::none) continue;
      if (streaming_started) break;  // too late for a status; the chunks carried finish_reason "abort"
      metrics.record_rejection(engine_error(result).status);
      co_await send_error(stream, engine_error(result), keep_alive);
      co_return !client_gone;
    }
    if (client_gone) co_return false;

    usage_counts usage;
    for (size_t c = 0; c < num_choices; ++c) {
      if (c % size_t(req.n) == 0) usage.prompt_tokens += finals[c].prompt_tokens;  // once per prompt
      usage.completion_tokens += finals[c].completion_tokens;
    }
    if (req.stream) {
      if (req.include_usage) {
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
    for (size_t c = 0; c < num_choices; ++c) {
      logprobs[c].samples = samples[c];
      choices.push_back({int32_t(c), texts[c], finals[c].reason, want_logprobs ? &logprobs[c] : nullptr});
    }
    std::string body;
    write_response(body, kind, meta, choices, usage);
    co_await send(stream, http::status::ok, std::move(body), keep_alive);
    co_return true;
  }

  // ---- WebSocket /v1/ws -------------------------------------------------------------------------------
  //
  // Client -> server, one JSON text frame per message:
  //   {"id": ID, "type": "completion" | "chat", ...the /v1/completions or /v1/chat/completions fields}
  //   {"id": ID, "type": "cancel"}
  // Server -> client:
  //   {"id": ID, "type": "delta", "index": i, "text": "..."}            per piece of text (plus "logprobs",
  //                                                                     as in the HTTP chunks, when asked)
  //   {"id": ID, "type": "done", "choices": [{"index", "finish_reason"}], "usage": {...}}  (choices get
  //                                                                     "logprobs" of tokens no delta carried)
  //   {"id": ID, "type": "error", "error": {...}}                       the request was refused
  // Several requests may run at once on one socket; closing it cancels them all.
  struct ws_request {
    std::vector<request_id> engine_ids;
    std::vector<generation_final> finals;
    size_t finished = 0;
    int32_t n = 1;
    endpoint kind = endpoint::completions;
    bool want_logprobs = false;
    std::vector<std::vector<sample_result>> unsent_samples;  // per choice, until its next delta frame
    std::vector<choice_logprobs> logprobs;                   // per choice
  };

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
    using event_inbox::event_inbox;
    std::deque<std::string> outgoing;  // frames for the writer
    std::unordered_map<std::string, ws_request> requests;  // by client id (JSON)
    bool reader_done = false;
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

  static std::string ws_error_frame(const std::string& client_id, const api_error& error) {
    std::string body;
    write_error(body, error);  // {"error": {...}}
    return "{\"id\":" + (client_id.empty() ? std::string("null") : client_id) + ",\"type\":\"error\"," + body.substr(1);
  }

  // One message from the client: submit, cancel, or an error frame back.
  void ws_message(ws_state& state, const std::string& text) {
    auto envelope = parse_ws_envelope(text);
    if (const auto* error = std::get_if<api_error>(&envelope)) {
      state.outgoing.push_back(ws_error_frame({}, *error));
      return;
    }
    const ws_envelope& env = std::get<ws_envelope>(envelope);
    if (env.type == ws_envelope::kind::cancel) {
      if (const auto found = state.requests.find(env.id_json); found != state.requests.end())
        for (const request_id id : found->second.engine_ids) engine.cancel(id);
      return;
    }
    if (state.requests.contains(env.id_json)) {
      state.outgoing.push_back(ws_error_frame(env.id_json, make_error(400, "a request with this id is still running", "invalid_request_error", "id")));
      return;
    }
    const endpoint kind = env.type == ws_envelope::kind::chat ? endpoint::chat_completions : endpoint::completions;
    parse_result parsed = parse_request(kind, text, options.limits);
    if (const auto* error = std::get_if<api_error>(&parsed)) {
      state.outgoing.push_back(ws_error_frame(env.id_json, *error));
      return;
    }
    completion_request& req = std::get<completion_request>(parsed);
    if (stopping) {
      state.outgoing.push_back(ws_error_frame(env.id_json, make_error(503, "the server is shutting down", "server_error")));
      return;
    }
    ws_request& running = state.requests[env.id_json];
    running.n = req.n;
    running.kind = kind;
    running.want_logprobs = req.params.sampling.logprobs;
    ++active_completions;
    running.engine_ids = submit_choices(req, kind, [&](int32_t index) {
      return std::make_shared<ws_sink>(std::static_pointer_cast<ws_state>(state.shared_from_this()), env.id_json, index);
    });
    running.finals.resize(running.engine_ids.size());
    running.unsent_samples.resize(running.engine_ids.size());
    running.logprobs.assign(running.engine_ids.size(), choice_logprobs{tok.get(), {}, 0});
  }

  // Engine events -> frames; a request's "done" (or "error") once all its choices have ended.
  void ws_drain(ws_state& state) {
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
      if (++request.finished < request.finals.size()) continue;
      forget(request.engine_ids);
      --active_completions;
      const auto failed = std::find_if(request.finals.begin(), request.finals.end(),
                                       [](const generation_final& f) { return f.error != request_error::none; });
      if (failed != request.finals.end()) {
        state.outgoing.push_back(ws_error_frame(event.client_id, engine_error(*failed)));
      } else {
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

  awaitable<void> ws_reader(websocket::stream<beast::tcp_stream>& ws, std::shared_ptr<ws_state> state) {
    beast::flat_buffer buffer;
    for (;;) {
      beast::error_code ec;
      co_await ws.async_read(buffer, asio::redirect_error(use_awaitable, ec));
      if (ec) break;  // closed by the client, or the connection is gone
      const std::string text = beast::buffers_to_string(buffer.data());
      buffer.consume(buffer.size());
      ws_message(*state, text);
      state->wake.cancel();
    }
    // The client is gone: whatever it asked for stops now; the writer waits for the finals.
    for (auto& [client_id, request] : state->requests)
      for (const request_id id : request.engine_ids) engine.cancel(id);
    state->reader_done = true;
    state->wake.cancel();
  }

  awaitable<void> ws_session(beast::tcp_stream stream, http::request<http::string_body> request) {
    websocket::stream<beast::tcp_stream> ws(std::move(stream));
    beast::get_lowest_layer(ws).expires_never();  // the HTTP timeout would kill a quiet socket
    ws.set_option(websocket::stream_base::timeout::suggested(beast::role_type::server));
    ws.read_message_max(options.body_limit);
    beast::error_code ec;
    co_await ws.async_accept(request, asio::redirect_error(use_awaitable, ec));
    if (ec) co_return;
    ws.text(true);
    auto state = std::make_shared<ws_state>(co_await asio::this_coro::executor);
    asio::co_spawn(state->strand, ws_reader(ws, state), asio::detached);
    // The writer: this coroutine. It owns `ws`, so it returns only once the reader is done with it and
    // every request's final event has come (the sinks post onto this strand until then).
    bool can_write = true;
    while (!(state->reader_done && state->requests.empty())) {
      ws_drain(*state);
      while (!state->outgoing.empty()) {
        const std::string frame = std::move(state->outgoing.front());
        state->outgoing.pop_front();
        if (!can_write) continue;
        co_await ws.async_write(asio::buffer(frame), asio::redirect_error(use_awaitable, ec));
        if (ec) can_write = false;  // the reader sees the connection go too
        ws_drain(*state);
      }
      if (state->reader_done && state->requests.empty()) break;
      if (!state->empty()) continue;
      state->wake.expires_at(asio::steady_timer::time_point::max());
      co_await state->wake.async_wait(asio::redirect_error(use_awaitable, ec));
    }
    if (ws.is_open()) co_await ws.async_close(websocket::close_code::normal, asio::redirect_error(use_awaitable, ec));
  }

  // Waits for the socket to become readable while the request runs: end of stream there means the client
  // closed the connection (a pipelined next request would be data instead), so its requests are
  // cancelled at once rather than at the next failed write. The peek never blocks: by the time this
  // handler runs, the session may already have read what made the socket readable (the next request on a
  // kept-alive connection), and the request this watch was for may be over.
  void watch_for_disconnect(beast::tcp_stream& stream, const std::shared_ptr<exchange_state>& state,
                            const std::vector<request_id>& ids) {
    tcp::socket& socket = stream.socket();
    socket.async_wait(tcp::socket::wait_read, [this, &stream, &socket, state, ids](beast::error_code ec) {
      // `finished` is set on this strand before the session moves on, so while it is false `stream` lives.
      if (ec || state->finished) return;
      char byte;
      const ssize_t n = ::recv(socket.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
      if (n > 0) return;  // data: a pipelined request, not a disconnect
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
        watch_for_disconnect(stream, state, ids);  // nothing there after all: keep watching
        return;
      }
      cancel_all(ids);  // end of stream, or the connection failed
      state->wake.cancel();
    });
  }
};

http_server::http_server(inference_engine& engine, std::shared_ptr<const tokenizer> tok, const server_options& options)
    : impl_(std::make_unique<impl>(engine, std::move(tok), options)) {}

http_server::~http_server() { stop(); }

uint16_t http_server::port() const { return impl_->acceptor.local_endpoint().port(); }

void http_server::start() {
  asio::co_spawn(impl_->acceptor.get_executor(), impl_->accept_loop(), asio::detached);
  impl_->thread = std::thread([this] { impl_->io.run(); });
  impl_->stats_thread = std::thread([this] { impl_->refresh_stats(); });
}

void http_server::stop(std::chrono::milliseconds grace) {
  if (!impl_ || impl_->stopping.exchange(true)) return;
  asio::post(impl_->acceptor.get_executor(), [this] {
    beast::error_code ec;
    impl_->acceptor.close(ec);
  });
  // Let what runs finish and answer, for as long as the grace period allows.
  auto wait_for_completions = [this](std::chrono::steady_clock::time_point until) {
    while (impl_->active_completions > 0 && std::chrono::steady_clock::now() < until)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
  };
  wait_for_completions(std::chrono::steady_clock::now() + grace);
  {
    std::lock_guard lock(impl_->live_mutex);
    for (const request_id id : impl_->live) impl_->engine.cancel(id);
  }
  // The sinks post onto this io_context: every request in flight must end before the context stops. The
  // cancelled ones then get their responses out (finish_reason "abort"), within the write timeout.
  impl_->engine.wait_idle();
  wait_for_completions(std::chrono::steady_clock::now() + std::chrono::seconds(5));
  {
    std::lock_guard lock(impl_->stats_mutex);
    impl_->stats_stop = true;
  }
  impl_->stats_wakeup.notify_all();
  if (impl_->stats_thread.joinable()) impl_->stats_thread.join();
  impl_->io.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
}

}  // namespace inflight::net
