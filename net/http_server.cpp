// The HTTP server's listener and lifecycle: bind, accept (one coroutine per connection, each on a strand
// of its own; http_session.cpp takes it from there), start, graceful stop; the engine-stats thread; the
// plain responses and OpenAI error objects every session sends.
#include "server_state.hpp"

#include <cerrno>
#include <cstdio>
#include <stdexcept>

#include "openai_response.hpp"

namespace inflight::net {

api_error make_error(int status, std::string message, std::string type, std::string param) {
  return api_error{status, std::move(message), std::move(type), std::move(param)};
}

void log_outcomes(request_log_entry& entry, std::span<const generation_final> finals, int32_t n) {
  for (size_t c = 0; c < finals.size(); ++c) {
    const char* reason = finals[c].error != request_error::none ? "error" : openai_finish_reason(finals[c].reason);
    entry.finish += (c ? "," : "") + std::string(reason ? reason : "-");
    if (c % size_t(n) == 0) entry.prompt_tokens += finals[c].prompt_tokens;
    entry.completion_tokens += finals[c].completion_tokens;
  }
}

api_error engine_error(const generation_final& result) {
  switch (result.error) {
    case request_error::queue_full: return make_error(429, result.message, "rate_limit_exceeded");
    case request_error::internal: return make_error(500, result.message, "server_error");
    case request_error::node_failed: return make_error(502, result.message, "server_error");
    case request_error::unavailable: return make_error(503, result.message, "server_error");
    default: return make_error(400, result.message);
  }
}

std::string error_json(const api_error& error) {
  std::string body;
  write_error(body, error);
  return body;
}

int retry_after_seconds(int status) { return status == 429 || status == 503 ? 1 : 0; }

server_state::server_state(inference_engine& e, const server_options& o)
    : engine(e), options(o), acceptor(asio::make_strand(io)) {
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

void server_state::refresh_stats() {
  std::unique_lock lock(stats_mutex);
  while (!stats_stop) {
    lock.unlock();
    const engine_stats snapshot = engine.stats();
    lock.lock();
    latest_stats = snapshot;
    stats_wakeup.wait_for(lock, std::chrono::seconds(1), [this] { return stats_stop; });
  }
}

void server_state::forget(const std::vector<request_id>& ids) {
  std::lock_guard lock(live_mutex);
  for (const request_id id : ids) live.erase(id);
}

void server_state::cancel_all(const std::vector<request_id>& ids) {
  for (const request_id id : ids) engine.cancel(id);
}

awaitable<void> send_response(server_state& server, beast::tcp_stream& stream, http::status status, std::string body,
                              bool keep_alive, std::string_view content_type, int retry_after) {
  http::response<http::string_body> response{status, 11};
  response.set(http::field::server, "inflight");
  response.set(http::field::content_type, content_type);
  if (retry_after > 0) response.set(http::field::retry_after, std::to_string(retry_after));
  response.keep_alive(keep_alive);
  response.body() = std::move(body);
  response.prepare_payload();
  beast::error_code ec;
  stream.expires_after(server.options.read_timeout);
  co_await http::async_write(stream, response, asio::redirect_error(use_awaitable, ec));
}

awaitable<void> send_error(server_state& server, beast::tcp_stream& stream, const api_error& error, bool keep_alive) {
  co_await send_response(server, stream, http::status(error.status), error_json(error), keep_alive, "application/json",
                         retry_after_seconds(error.status));
}

namespace {

// A connection beyond max_connections: 503 at once (the response fits the socket buffer, so the write does
// not wait), then whatever the client sends is read and dropped for a second before the close, so that
// the close does not reset the connection before the client has read the answer. Refusals in flight are
// capped too: beyond the cap, the connection is closed without an answer.
awaitable<void> refuse_connection(server_state& server, tcp::socket socket) {
  ++server.refusals_in_flight;
  beast::tcp_stream stream(std::move(socket));
  const std::string body = error_json(make_error(503, "the server has " + std::to_string(server.options.max_connections) +
                                                          " connections open, its limit; retry shortly",
                                                 "server_error"));
  const std::string response = "HTTP/1.1 503 Service Unavailable\r\nServer: inflight\r\nRetry-After: 1\r\n"
                               "Content-Type: application/json\r\nConnection: close\r\nContent-Length: " +
                               std::to_string(body.size()) + "\r\n\r\n" + body;
  beast::error_code ec;
  stream.expires_after(std::chrono::seconds(1));
  co_await asio::async_write(stream, asio::buffer(response), asio::redirect_error(use_awaitable, ec));
  if (!ec) stream.socket().shutdown(tcp::socket::shutdown_send, ec);
  char discard[4096];
  while (!ec) co_await stream.async_read_some(asio::buffer(discard), asio::redirect_error(use_awaitable, ec));
  --server.refusals_in_flight;
}

awaitable<void> accept_loop(server_state& server) {
  bool said_out_of_files = false;
  for (;;) {
    beast::error_code ec;
    tcp::socket socket =
        co_await server.acceptor.async_accept(asio::make_strand(server.io), asio::redirect_error(use_awaitable, ec));
    if (ec == asio::error::operation_aborted || !server.acceptor.is_open()) co_return;  // closed by stop()
    if (ec) {
      // Out of file descriptors (EMFILE, ENFILE) or memory, or the peer gave up before the accept: the
      // listener must survive it. Back off briefly so a full table does not spin this loop.
      if (!said_out_of_files && (ec == asio::error::no_descriptors || ec.value() == ENFILE)) {
        std::fprintf(stderr, "inflight: cannot accept connections: %s (open-file limit reached)\n", ec.message().c_str());
        said_out_of_files = true;
      }
      asio::steady_timer pause(co_await asio::this_coro::executor, std::chrono::milliseconds(50));
      co_await pause.async_wait(asio::redirect_error(use_awaitable, ec));
      continue;
    }
    const asio::any_io_executor strand = socket.get_executor();
    if (server.connections >= server.options.max_connections) {
      server.metrics.count_refused_connection();
      if (server.refusals_in_flight < 64) asio::co_spawn(strand, refuse_connection(server, std::move(socket)), asio::detached);
      continue;  // else the socket closes here
    }
    socket.set_option(tcp::no_delay(true), ec);  // small SSE chunks go out at once
    asio::co_spawn(strand, http_session(server, beast::tcp_stream(std::move(socket)), connection_slot(server)),
                   asio::detached);
  }
}

}  // namespace

struct http_server::impl : server_state {
  using server_state::server_state;
};

http_server::http_server(inference_engine& engine, const server_options& options)
    : impl_(std::make_unique<impl>(engine, options)) {}

http_server::~http_server() { stop(); }

uint16_t http_server::port() const { return impl_->acceptor.local_endpoint().port(); }

void http_server::start() {
  asio::co_spawn(impl_->acceptor.get_executor(), accept_loop(*impl_), asio::detached);
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
