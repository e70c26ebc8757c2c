// One HTTP connection: read a request (size limits, read timeout), check the API key, hand WebSocket
// upgrades to websocket_session.cpp and completions to completion_exchange.cpp, answer the small endpoints
// here: the page, /health, /ready, /v1/models, /v1/nodes, /metrics, /tokenize, /detokenize.
#include "server_state.hpp"

#include <boost/beast/websocket.hpp>

#include <algorithm>

#include "inflight/detokenizer.hpp"
#include "inflight/tokenizer.hpp"
#include "json_writer.hpp"
#include "node_json.hpp"
#include "web_assets.hpp"

namespace inflight::net {

namespace {

namespace websocket = beast::websocket;

std::string_view path_of(const http_request& request) {
  const std::string_view target(request.target().data(), request.target().size());
  return target.substr(0, target.find('?'));
}

// Equal strings, in time that depends on the lengths only (a key's length is not the secret).
bool constant_time_equal(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  volatile unsigned char difference = 0;
  for (size_t i = 0; i < a.size(); ++i) difference = difference | (static_cast<unsigned char>(a[i]) ^ static_cast<unsigned char>(b[i]));
  return difference == 0;
}

bool authorized(const server_state& server, const http_request& request) {
  const std::vector<std::string>& keys = server.options.api_keys;
  if (keys.empty()) return true;
  const std::string_view target(request.target().data(), request.target().size());
  const std::string_view path = path_of(request);
  if (path == "/health" || path == "/ready" || path == "/" || path == "/index.html") return true;
  // Every key is compared in full, whatever matched: the time taken does not tell how close a guess was.
  const auto matches = [&](std::string_view given) {
    bool found = false;
    for (const std::string& key : keys) found |= constant_time_equal(key, given);
    return found;
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

api_error no_model_yet() {
  return make_error(503, "no engine node has connected to the gateway yet; retry shortly", "server_error");
}

// The ids a completion with this prompt would start from (special-token text parsed, BOS as the
// model's metadata says), so clients can count before they ask.
awaitable<void> tokenize(server_state& server, beast::tcp_stream& stream, const std::string& body, bool keep_alive) {
  const auto model = server.model();
  if (!model) co_return co_await send_error(server, stream, no_model_yet(), keep_alive);
  auto parsed = parse_tokenize_request(body);
  if (const auto* error = std::get_if<api_error>(&parsed)) co_return co_await send_error(server, stream, *error, keep_alive);
  const std::vector<int32_t> ids = model->tok->encode(std::get<tokenize_request>(parsed).prompt, true);
  std::string out;
  json_writer w(out);
  w.begin_object().key("tokens").begin_array();
  for (const int32_t id : ids) w.value(id);
  w.end_array().key("count").value(int64_t(ids.size())).end_object();
  co_await send_response(server, stream, http::status::ok, std::move(out), keep_alive);
}

awaitable<void> detokenize(server_state& server, beast::tcp_stream& stream, const std::string& body, bool keep_alive) {
  const auto model = server.model();
  if (!model) co_return co_await send_error(server, stream, no_model_yet(), keep_alive);
  auto parsed = parse_detokenize_request(body);
  if (const auto* error = std::get_if<api_error>(&parsed)) co_return co_await send_error(server, stream, *error, keep_alive);
  std::string text;
  incremental_detokenizer detokenizer(model->tok);  // valid UTF-8 out, whatever the ids
  for (const int32_t id : std::get<detokenize_request>(parsed).tokens) {
    if (id >= model->tok->vocab_size()) {
      co_return co_await send_error(server, stream,
                                    make_error(400, "token id " + std::to_string(id) + " is out of range",
                                               "invalid_request_error", "tokens"),
                                    keep_alive);
    }
    detokenizer.push(id, text);
  }
  detokenizer.flush(text);
  std::string out;
  json_writer w(out);
  w.begin_object().key("prompt").value(text).end_object();
  co_await send_response(server, stream, http::status::ok, std::move(out), keep_alive);
}

std::string models_json(const std::string& name) {
  std::string body;
  json_writer w(body);
  w.begin_object().key("object").value("list").key("data").begin_array().begin_object();
  w.key("id").value(name).key("object").value("model").key("owned_by").value("inflight");
  w.end_object().end_array().end_object();
  return body;
}

// In-process: ok unless the engine has failed. A gateway: ok while at least one node is up, with the
// nodes listed either way (a load balancer in front of several gateways takes 503 as "not this one").
awaitable<void> health(server_state& server, beast::tcp_stream& stream, bool keep_alive) {
  if (!server.engine.is_gateway()) {
    std::string failure;
    {
      std::lock_guard lock(server.stats_mutex);
      failure = server.latest_stats.failure;
    }
    if (failure.empty()) co_return co_await send_response(server, stream, http::status::ok, R"({"status":"ok"})", keep_alive);
    std::string body;
    json_writer w(body);
    w.begin_object().key("status").value("failed").key("error").value(failure).end_object();
    co_return co_await send_response(server, stream, http::status::service_unavailable, std::move(body), keep_alive);
  }
  const std::vector<node_status> nodes = server.engine.nodes();
  const bool any_up = std::any_of(nodes.begin(), nodes.end(), [](const node_status& n) { return n.state == "up"; });
  std::string body;
  write_gateway_health(body, nodes, server.model() != nullptr);
  co_await send_response(server, stream, any_up ? http::status::ok : http::status::service_unavailable, std::move(body),
                         keep_alive, "application/json", any_up ? 0 : 1);
}

// Returns false when the connection must close (the client went away mid-response).
awaitable<bool> route(server_state& server, beast::tcp_stream& stream, http_request& request) {
  const std::string_view path = path_of(request);
  const bool keep_alive = request.keep_alive();
  const bool get = request.method() == http::verb::get, post = request.method() == http::verb::post;
  const auto wrong_method = [&](std::string_view verb) {
    return make_error(405, "use " + std::string(verb) + " " + std::string(path));
  };
  if (path == "/" || path == "/index.html") {
    if (!get) co_await send_error(server, stream, wrong_method("GET"), keep_alive);
    else co_await send_response(server, stream, http::status::ok, std::string(chat_page_html), keep_alive, "text/html; charset=utf-8");
  } else if (path == "/health" || path == "/ready") {
    // Both: an in-process server only listens once the model is loaded and the engine runs.
    if (!get) co_await send_error(server, stream, wrong_method("GET"), keep_alive);
    else co_await health(server, stream, keep_alive);
  } else if (path == "/v1/models") {
    const auto model = server.model();
    if (!get) co_await send_error(server, stream, wrong_method("GET"), keep_alive);
    else if (!model) co_await send_error(server, stream, no_model_yet(), keep_alive);
    else co_await send_response(server, stream, http::status::ok, models_json(server.model_name(*model)), keep_alive);
  } else if (path == "/v1/nodes") {
    if (!get) {
      co_await send_error(server, stream, wrong_method("GET"), keep_alive);
    } else {
      std::string body;
      write_node_list(body, server.engine.nodes());
      co_await send_response(server, stream, http::status::ok, std::move(body), keep_alive);
    }
  } else if (path == "/metrics") {
    if (!get) {
      co_await send_error(server, stream, wrong_method("GET"), keep_alive);
    } else {
      {
        std::lock_guard lock(server.stats_mutex);
        server.metrics.set_engine_stats(server.latest_stats);
      }
      server.metrics.set_nodes(server.engine.nodes());
      server.metrics.set_open_connections(server.connections);
      co_await send_response(server, stream, http::status::ok, server.metrics.render(), keep_alive, "text/plain; version=0.0.4");
    }
  } else if (path == "/tokenize" || path == "/detokenize") {
    if (!post) co_await send_error(server, stream, wrong_method("POST"), keep_alive);
    else if (path == "/tokenize") co_await tokenize(server, stream, request.body(), keep_alive);
    else co_await detokenize(server, stream, request.body(), keep_alive);
  } else if (path == "/v1/completions" || path == "/v1/chat/completions") {
    if (!post) {
      co_await send_error(server, stream, wrong_method("POST"), keep_alive);
    } else {
      const endpoint kind = path == "/v1/completions" ? endpoint::completions : endpoint::chat_completions;
      co_return co_await completion_exchange(server, stream, request, kind);
    }
  } else {
    co_await send_error(server, stream, make_error(404, "no such endpoint: " + std::string(path), "not_found_error"), keep_alive);
  }
  co_return true;
}

}  // namespace

awaitable<void> http_session(server_state& server, beast::tcp_stream stream, connection_slot slot) {
  beast::flat_buffer buffer;
  const server_options& options = server.options;
  for (;;) {
    http::request_parser<http::string_body> parser;
    parser.header_limit(uint32_t(options.header_limit));
    parser.body_limit(options.body_limit);
    beast::error_code ec;
    // Three deadlines: idle until the request's first byte (read_timeout), then the headers within
    // header_timeout (however slowly they trickle in), then the body within read_timeout.
    if (buffer.size() == 0) {
      stream.expires_after(options.read_timeout);
      const size_t got = co_await stream.async_read_some(buffer.prepare(4096), asio::redirect_error(use_awaitable, ec));
      buffer.commit(got);
      if (ec) break;  // closed or idle too long
    }
    stream.expires_after(options.header_timeout);
    co_await http::async_read_header(stream, buffer, parser, asio::redirect_error(use_awaitable, ec));
    if (!ec && !parser.is_done()) {
      stream.expires_after(options.read_timeout);
      co_await http::async_read(stream, buffer, parser, asio::redirect_error(use_awaitable, ec));
    }
    if (ec == http::error::body_limit) {
      co_await send_error(server, stream,
                          make_error(413, "the request body is larger than " + std::to_string(options.body_limit) + " bytes"),
                          false);
      break;
    }
    if (ec == http::error::header_limit) {
      co_await send_error(server, stream, make_error(431, "the request headers are too large"), false);
      break;
    }
    if (ec) break;  // closed, timed out, or not HTTP
    http_request request = parser.release();
    if (!authorized(server, request)) {
      co_await send_error(server, stream,
                          make_error(401, "a valid API key is required (Authorization: Bearer <key>)", "authentication_error"),
                          request.keep_alive());
      if (!request.keep_alive()) break;
      continue;
    }
    if (websocket::is_upgrade(request)) {
      if (path_of(request).starts_with("/v1/ws"))
        co_return co_await websocket_session(server, std::move(stream), std::move(request));
      co_await send_error(server, stream, make_error(404, "WebSocket endpoint is /v1/ws", "not_found_error"), false);
      break;
    }
    const bool keep_alive = request.keep_alive();
    const bool open = co_await route(server, stream, request);
    if (!open || !keep_alive) break;
  }
  beast::error_code ec;
  stream.socket().shutdown(tcp::socket::shutdown_send, ec);
}

}  // namespace inflight::net
