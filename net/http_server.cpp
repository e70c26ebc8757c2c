// The HTTP server's listener and lifecycle: bind, accept (one coroutine per connection, each on a strand
// of its own; http_session.cpp takes it from there), start, graceful stop; the engine-stats thread; the
// plain responses and OpenAI error objects every session sends.
#include "server_state.hpp"

#include <stdexcept>

#include "openai_response.hpp"

namespace inflight::net {

api_error make_error(int status, std::string message, std::string type, std::string param) {
  return api_error{status, std::move(message), std::move(type), std::move(param)};
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

awaitable<void> accept_loop(server_state& server) {
  for (;;) {
    beast::error_code ec;
    tcp::socket socket =
        co_await server.acceptor.async_accept(asio::make_strand(server.io), asio::redirect_error(use_awaitable, ec));
    if (ec) co_return;  // closed by stop()
    socket.set_option(tcp::no_delay(true), ec);  // small SSE chunks go out at once
    asio::co_spawn(socket.get_executor(), http_session(server, beast::tcp_stream(std::move(socket))), asio::detached);
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
