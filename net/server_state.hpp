// What the HTTP server's translation units share (internal to net/, and the only header besides them that
// includes Beast): the server's state, the event inbox that carries engine events onto a connection's
// strand, responses and errors, and the entry points of each kind of session.
//
//   http_server.cpp          listener, accept loop, start/stop, the engine-stats thread, responses
//   http_session.cpp         one HTTP connection: read, authorize, route; the small endpoints
//   completion_exchange.cpp  /v1/completions and /v1/chat/completions, whole or as server-sent events
//   websocket_session.cpp    /v1/ws: several streamed requests per socket
//
// One coroutine per connection, on its own strand; one engine request per choice. The engine's sinks run
// on CAF threads: they queue events in an event_inbox and post a wake-up onto the connection's strand,
// where the coroutine drains the queue (docs/caf-0.17.md §7: never block an io thread on CAF).
#pragma once

#include <utility>  // before asio: Boost 1.74's awaitable.hpp uses std::exchange without it (g++ 12, C++20)

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "http_server.hpp"
#include "inflight/engine.hpp"
#include "openai_request.hpp"
#include "server_metrics.hpp"

namespace inflight::net {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using asio::awaitable;
using asio::use_awaitable;
using clock = std::chrono::steady_clock;
using http_request = http::request<http::string_body>;

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

api_error make_error(int status, std::string message, std::string type = "invalid_request_error", std::string param = {});
// The HTTP status and error for a request the engine ended with an error: 400 bad input, 429 queue full,
// 500 engine failure, 502 the engine node died under it, 503 no engine node available.
api_error engine_error(const generation_final& result);
std::string error_json(const api_error& error);
// A finished request's outcome into its log line: the choices' finish reasons ("error" for a failed one),
// the prompt tokens once per prompt (choice c is prompt c / n), the completion tokens of all.
void log_outcomes(request_log_entry& entry, std::span<const generation_final> finals, int32_t n);
// Seconds a client should wait before retrying a refusal with this status (Retry-After); 0: no header.
int retry_after_seconds(int status);

struct server_state {
  server_state(inference_engine& engine, const server_options& options);

  inference_engine& engine;
  server_options options;
  asio::io_context io{1};
  tcp::acceptor acceptor;
  std::thread thread;
  std::atomic<bool> stopping{false};
  std::atomic<int> active_completions{0};  // from submit to the last byte of the response
  int32_t connections = 0;            // open sessions (io thread only; connection_slot counts them)
  int32_t refusals_in_flight = 0;     // connections beyond the limit being told 503 (io thread only)
  server_metrics metrics;                  // io thread only
  int64_t next_response_id = 0;            // io thread only

  // The engine's counters, refreshed off the io thread (a blocking actor round-trip in-process) once a second.
  std::thread stats_thread;
  std::mutex stats_mutex;
  std::condition_variable stats_wakeup;
  bool stats_stop = false;
  engine_stats latest_stats;
  void refresh_stats();

  std::mutex live_mutex;
  std::set<request_id> live;  // engine requests in flight, cancelled by stop()

  // The model and its name as clients use it (options.model_name when set); null while a gateway has met
  // no node yet.
  std::shared_ptr<const served_model> model() const { return engine.model(); }
  std::string model_name(const served_model& model) const {
    return options.model_name.empty() ? model.name : options.model_name;
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
  void forget(const std::vector<request_id>& ids);
  void cancel_all(const std::vector<request_id>& ids);
};

// One open connection counted against max_connections, from the accept (counted there, so that the next
// accept already sees it) until its session ends. Moved into the session's coroutine.
class connection_slot {
 public:
  explicit connection_slot(server_state& server) : server_(&server) { ++server_->connections; }
  connection_slot(connection_slot&& other) noexcept : server_(std::exchange(other.server_, nullptr)) {}
  connection_slot& operator=(connection_slot&&) = delete;
  ~connection_slot() {
    if (server_) --server_->connections;
  }

 private:
  server_state* server_;
};

awaitable<void> send_response(server_state& server, beast::tcp_stream& stream, http::status status, std::string body,
                              bool keep_alive, std::string_view content_type = "application/json", int retry_after = 0);
awaitable<void> send_error(server_state& server, beast::tcp_stream& stream, const api_error& error, bool keep_alive);

// One connection, until it closes (http_session.cpp).
awaitable<void> http_session(server_state& server, beast::tcp_stream stream, connection_slot slot);
// One completion request; returns false when the connection must close (completion_exchange.cpp).
awaitable<bool> completion_exchange(server_state& server, beast::tcp_stream& stream, http_request& request,
                                    endpoint kind);
// The rest of a connection that asked for a WebSocket upgrade at /v1/ws (websocket_session.cpp).
awaitable<void> websocket_session(server_state& server, beast::tcp_stream stream, http_request request);

}  // namespace inflight::net
