// What the HTTP server suites share: the server in-process on a free port over the CPU backend, and a
// plain Beast client (one request per connection), JSON and SSE helpers.
#pragma once

#include <utility>  // before asio (Boost 1.74 + g++ 12 in C++20)

#include <doctest/doctest.h>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <simdjson.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "http_server.hpp"
#include "inflight/cpu_backend.hpp"
#include "inflight/engine.hpp"
#include "inflight/gguf.hpp"
#include "inflight/tokenizer.hpp"

namespace inflight::test {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;

struct test_server {
  std::shared_ptr<const tokenizer> tok;
  std::unique_ptr<inference_engine> engine;
  std::unique_ptr<net::http_server> server;
  uint16_t port = 0;

  // `wrap` may put the CPU backend inside another (a fault-injecting one) before the engine gets it.
  using backend_wrapper = std::function<std::unique_ptr<backend>(std::unique_ptr<backend>)>;
  explicit test_server(engine_options options = {}, net::server_options server_options = {},
                       const backend_wrapper& wrap = {}) {
    auto file = gguf::gguf_file::open(INFLIGHT_DEFAULT_MODEL);
    cpu_backend_options backend_options;
    backend_options.max_step_sequences = options.max_num_seqs;
    tok = tokenizer::from_gguf(*file);
    std::unique_ptr<backend> model = std::make_unique<cpu_backend>(file, backend_options);
    if (wrap) model = wrap(std::move(model));
    engine = inference_engine::create(std::move(model), tok, chat_template::from_gguf(*file), options);
    server_options.port = 0;
    server_options.model_name = "test-model";
    // The log lines are e2e/request_log's to check; here they would only bury a failure's output.
    server_options.request_log = net::request_log_format::off;
    server = std::make_unique<net::http_server>(*engine, server_options);
    server->start();
    port = server->port();
  }
  ~test_server() { server->stop(); }
};

struct reply {
  int status = 0;
  std::string body;
  std::string retry_after;
};

inline reply call(uint16_t port, http::verb method, const std::string& target, const std::string& body = {}) {
  asio::io_context io;
  beast::tcp_stream stream(io);
  stream.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
  http::request<http::string_body> request{method, target, 11};
  request.set(http::field::host, "localhost");
  request.set(http::field::content_type, "application/json");
  request.body() = body;
  request.prepare_payload();
  http::write(stream, request);
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(64 << 20);
  http::read(stream, buffer, parser);
  auto response = parser.release();
  return {int(response.result_int()), response.body(), std::string(response[http::field::retry_after])};
}

inline reply post(uint16_t port, const std::string& target, const std::string& body) {
  return call(port, http::verb::post, target, body);
}

inline simdjson::dom::element json(simdjson::dom::parser& parser, const std::string& text) {
  simdjson::dom::element root;
  INFO("body: " << text);
  REQUIRE(parser.parse(text).get(root) == simdjson::SUCCESS);
  return root;
}

inline std::string str(simdjson::dom::element element) {
  std::string_view text;
  REQUIRE(element.get_string().get(text) == simdjson::SUCCESS);
  return std::string(text);
}

// The JSON payloads of an SSE body, in order ("[DONE]" included as is).
inline std::vector<std::string> sse_events(const std::string& body) {
  std::vector<std::string> events;
  size_t at = 0;
  while ((at = body.find("data: ", at)) != std::string::npos) {
    const size_t end = body.find("\n\n", at);
    REQUIRE(end != std::string::npos);
    events.push_back(body.substr(at + 6, end - at - 6));
    at = end + 2;
  }
  return events;
}

// Polls until `done` holds (bounded: a stuck server fails the REQUIRE that follows instead of hanging).
template <class Condition>
void wait_for(Condition done) {
  for (int i = 0; i < 3000 && !done(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
}

// A blocking WebSocket client for the tests.
struct ws_client {
  asio::io_context io;
  websocket::stream<beast::tcp_stream> ws{io};
  explicit ws_client(uint16_t port) {
    beast::get_lowest_layer(ws).connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
    ws.handshake("localhost", "/v1/ws");
    ws.text(true);
  }
  void send(const std::string& text) { ws.write(asio::buffer(text)); }
  std::string receive() {
    beast::flat_buffer buffer;
    ws.read(buffer);
    return beast::buffers_to_string(buffer.data());
  }
};

}  // namespace inflight::test
