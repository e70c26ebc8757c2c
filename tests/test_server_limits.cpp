// The server's limits, each at its boundary: open connections, the header deadline (a client trickling
// its headers), requests per WebSocket, body and header size, n, prompts and stop strings per request;
// and API keys (a near miss is a miss, and the answer does not echo it).
#include "http_test_support.hpp"

#include <sys/socket.h>
#include <sys/time.h>

#include <string>
#include <thread>

using namespace inflight;
using namespace inflight::test;

namespace {

tcp::socket connect_to(asio::io_context& io, uint16_t port) {
  tcp::socket socket(io);
  socket.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
  const timeval receive_timeout{20, 0};  // a server that never answers fails the test instead of hanging it
  setsockopt(socket.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &receive_timeout, sizeof receive_timeout);
  return socket;
}

// Everything the server sends until it closes the connection.
std::string read_to_end(tcp::socket& socket) {
  std::string got;
  char chunk[4096];
  beast::error_code ec;
  while (!ec) got.append(chunk, socket.read_some(asio::buffer(chunk), ec));
  return got;
}

// The status line and headers of the first response (the connection may stay open).
std::string read_response_head(tcp::socket& socket) {
  std::string got;
  char chunk[4096];
  beast::error_code ec;
  while (!ec && got.find("\r\n\r\n") == std::string::npos) got.append(chunk, socket.read_some(asio::buffer(chunk), ec));
  return got;
}

// GET target, retried every 20 ms (up to 100 times) while the server refuses the connection: for a slot
// that frees once the server has seen some other connection close.
reply call_when_served(uint16_t port, const std::string& target) {
  reply got;
  for (int attempt = 0; attempt < 100 && got.status != 200; ++attempt) {
    try {
      got = call(port, http::verb::get, target);
    } catch (const std::exception&) {  // refused: 503 then close, which the client may read as a reset
    }
    if (got.status != 200) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return got;
}

}  // namespace

TEST_CASE("beyond max-connections a new connection gets 503 with Retry-After, and a freed slot is reused") {
  net::server_options options;
  options.max_connections = 3;
  test_server served({}, options);
  asio::io_context io;
  std::vector<tcp::socket> idle;
  for (int i = 0; i < 3; ++i) idle.push_back(connect_to(io, served.port));
  tcp::socket extra = connect_to(io, served.port);
  const std::string refusal = read_to_end(extra);
  CHECK(refusal.rfind("HTTP/1.1 503", 0) == 0);
  CHECK(refusal.find("Retry-After: 1\r\n") != std::string::npos);
  CHECK(refusal.find("\"type\":\"server_error\"") != std::string::npos);
  CHECK(refusal.find("3 connections open") != std::string::npos);
  idle.front().close();
  // The slot frees as the server sees the close (within a poll or two); then /health is served.
  CHECK(call_when_served(served.port, "/health").status == 200);
  // Each call closes its connection as it returns, and the server may accept the next one before it has
  // seen that close: the next call can be refused too, until it has (seen in CI).
  const reply metrics_reply = call_when_served(served.port, "/metrics");
  REQUIRE(metrics_reply.status == 200);
  const std::string& metrics = metrics_reply.body;
  CHECK(metrics.find("inflight_connections_refused_total ") != std::string::npos);
  CHECK(metrics.find("inflight_connections_refused_total 0\n") == std::string::npos);
}

TEST_CASE("a client trickling its headers is cut off at the header deadline while others are served") {
  net::server_options options;
  options.header_timeout = std::chrono::seconds(1);
  options.read_timeout = std::chrono::seconds(60);  // the idle timeout is not what closes it
  test_server served({}, options);
  asio::io_context io;
  tcp::socket slow = connect_to(io, served.port);
  asio::write(slow, asio::buffer(std::string("GET /health HTTP/1.1\r\n")));
  bool closed = false;
  // A header line every 100 ms, for up to 10 s (10 times the deadline): the server must close first.
  for (int i = 0; i < 100 && !closed; ++i) {
    beast::error_code ec;
    asio::write(slow, asio::buffer("X-Slow-" + std::to_string(i) + ": 1\r\n"), ec);
    if (!ec) {
      slow.non_blocking(true);
      char byte;
      slow.read_some(asio::buffer(&byte, 1), ec);
      slow.non_blocking(false);
      closed = ec && ec != asio::error::would_block;
    } else {
      closed = true;
    }
    if (i == 3) CHECK(call(served.port, http::verb::get, "/health").status == 200);  // others are served meanwhile
    if (!closed) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  CHECK(closed);
  // A kept-alive client that is merely idle between requests is not cut off by the header deadline.
  beast::tcp_stream stream(io);
  stream.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), served.port));
  for (int i = 0; i < 2; ++i) {
    if (i == 1) std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    http::request<http::string_body> request{http::verb::get, "/health", 11};
    request.set(http::field::host, "localhost");
    http::write(stream, request);
    beast::flat_buffer buffer;
    http::response<http::string_body> response;
    http::read(stream, buffer, response);
    CHECK(response.result_int() == 200);
  }
}

TEST_CASE("a WebSocket runs max-ws-requests at once and refuses one more with a 429 error frame") {
  net::server_options options;
  options.max_ws_requests = 2;
  test_server served({}, options);
  simdjson::dom::parser parser;
  ws_client client(served.port);
  for (int id = 1; id <= 3; ++id)
    client.send(R"({"id": )" + std::to_string(id) + R"(, "prompt": "Once upon a time", "max_tokens": 30, "ignore_eos": true})");
  int done = 0, refused = 0;
  while (done + refused < 3) {
    const std::string frame = client.receive();
    const std::string type = str(json(parser, frame)["type"]);
    if (type == "done") ++done;
    if (type == "error") {
      CHECK(int64_t(json(parser, frame)["id"]) == 3);
      CHECK(str(json(parser, frame)["error"]["type"]) == "rate_limit_exceeded");
      ++refused;
    }
  }
  CHECK(done == 2);
  CHECK(refused == 1);
  // Once they are done, the socket takes requests again.
  client.send(R"({"id": 4, "prompt": "Once upon a time", "max_tokens": 3})");
  std::string frame;
  do frame = client.receive();
  while (str(json(parser, frame)["type"]) == "delta");
  CHECK(str(json(parser, frame)["type"]) == "done");
}

TEST_CASE("request limits at their boundaries: body size, n, prompts, stop strings") {
  net::server_options options;
  options.body_limit = 2048;
  options.limits.max_n = 2;
  options.limits.max_prompts = 3;
  options.limits.max_stop = 2;
  test_server served({}, options);
  simdjson::dom::parser parser;
  const auto padded = [](std::string body, size_t size) {  // JSON whitespace up to `size` bytes
    REQUIRE(body.size() <= size);
    body.insert(body.size() - 1, size - body.size(), ' ');
    return body;
  };
  const std::string small = R"({"prompt": "Hi", "max_tokens": 1})";
  CHECK(post(served.port, "/v1/completions", padded(small, 2048)).status == 200);
  CHECK(post(served.port, "/v1/completions", padded(small, 2049)).status == 413);

  const auto status_and_param = [&](const std::string& body) {
    const reply answer = post(served.port, "/v1/completions", body);
    std::string param;
    if (answer.status != 200) param = str(json(parser, answer.body)["error"]["param"]);
    return std::make_pair(answer.status, param);
  };
  CHECK(status_and_param(R"({"prompt": "Hi", "max_tokens": 1, "n": 2})").first == 200);
  CHECK(status_and_param(R"({"prompt": "Hi", "max_tokens": 1, "n": 3})") == std::make_pair(400, std::string("n")));
  CHECK(status_and_param(R"({"prompt": ["a", "b", "c"], "max_tokens": 1})").first == 200);
  CHECK(status_and_param(R"({"prompt": ["a", "b", "c", "d"], "max_tokens": 1})") == std::make_pair(400, std::string("prompt")));
  CHECK(status_and_param(R"({"prompt": "Hi", "max_tokens": 1, "stop": ["x", "y"]})").first == 200);
  CHECK(status_and_param(R"({"prompt": "Hi", "max_tokens": 1, "stop": ["x", "y", "z"]})") ==
        std::make_pair(400, std::string("stop")));
  CHECK(served.engine->stats().kv_blocks_used == 0);
}

TEST_CASE("header size at its boundary: the limit is served, a byte more gets 431") {
  net::server_options options;
  options.header_limit = 1024;
  test_server served({}, options);
  // Beast counts the fields and the empty line that ends them, not the request line.
  const auto status_for_header_of = [&](size_t header_bytes) {
    const std::string head = "GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: ";
    const std::string end = "\r\n\r\n";
    const std::string request = head + std::string(header_bytes - head.size() - end.size(), 'p') + end;
    REQUIRE(request.size() == header_bytes);
    asio::io_context io;
    tcp::socket socket = connect_to(io, served.port);
    asio::write(socket, asio::buffer(request));
    const std::string answer = read_response_head(socket);
    return answer.substr(9, 3);
  };
  const size_t request_line = std::string("GET /health HTTP/1.1\r\n").size();
  CHECK(status_for_header_of(request_line + 1024) == "200");
  CHECK(status_for_header_of(request_line + 1025) == "431");
}

TEST_CASE("API keys: near misses are refused and the refusal does not echo the key") {
  net::server_options options;
  options.api_keys = {"sesame-0123456789", "other-key"};
  test_server served({}, options);
  const auto status_with = [&](const std::string& key) {
    asio::io_context io;
    beast::tcp_stream stream(io);
    stream.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), served.port));
    http::request<http::string_body> request{http::verb::get, "/v1/models", 11};
    request.set(http::field::host, "localhost");
    request.set(http::field::authorization, "Bearer " + key);
    http::write(stream, request);
    beast::flat_buffer buffer;
    http::response<http::string_body> response;
    http::read(stream, buffer, response);
    if (!key.empty()) CHECK(response.body().find(key) == std::string::npos);
    return response.result_int();
  };
  CHECK(status_with("sesame-0123456789") == 200);
  CHECK(status_with("other-key") == 200);
  CHECK(status_with("sesame-012345678") == 401);    // a prefix
  CHECK(status_with("sesame-01234567890") == 401);  // one more character
  CHECK(status_with("sesame-0123456788") == 401);   // the last character differs
  CHECK(status_with("Sesame-0123456789") == 401);   // the first one does
  CHECK(status_with("") == 401);
}

TEST_CASE("a WebSocket client that sends without reading gets every answer once it reads") {
  // The server stops reading while 256 frames wait for this client; none may be lost or deadlock.
  test_server served;
  simdjson::dom::parser parser;
  ws_client client(served.port);
  // A small receive window, and answers (~150 bytes each) well beyond what the socket buffers hold.
  const int window = 4096;
  setsockopt(beast::get_lowest_layer(client.ws).socket().native_handle(), SOL_SOCKET, SO_RCVBUF, &window, sizeof window);
  constexpr int messages = 3000;
  for (int i = 0; i < messages; ++i) client.send("not json " + std::to_string(i));
  client.send(R"({"id": "last", "prompt": "Hi", "max_tokens": 2})");
  int errors = 0;
  std::string frame;
  for (;;) {
    frame = client.receive();
    const std::string type = str(json(parser, frame)["type"]);
    if (type == "error") ++errors;
    if (type == "done") break;
  }
  CHECK(errors == messages);
  CHECK(str(json(parser, frame)["id"]) == "last");
}

// Found by tools/soak.py: a streamed request with n > 1 whose last choice was refused (queue full) before
// anything streamed answered 200 with the other choices only. The whole request must get the 429, as a
// whole (non-streamed) one does, and its other choices must stop.
TEST_CASE("a streamed request with n > 1 that is partly refused gets 429, not a stream missing a choice") {
  engine_options engine;
  engine.max_num_seqs = 1;
  engine.max_waiting = 2;
  test_server served(engine);
  simdjson::dom::parser parser;
  for (const bool stream : {true, false}) {
    const reply answer = post(served.port, "/v1/chat/completions",
                              R"({"messages": [{"role": "user", "content": "Hi"}], "n": 4, "max_tokens": 3, "stream": )" +
                                  std::string(stream ? "true" : "false") + "}");
    CAPTURE(stream);
    CHECK(answer.status == 429);
    CHECK(answer.retry_after == "1");
    CHECK(str(json(parser, answer.body)["error"]["type"]) == "rate_limit_exceeded");
    wait_for([&] { return served.engine->stats().running + served.engine->stats().waiting == 0; });
  }
  const engine_stats stats = served.engine->stats();
  CHECK(stats.kv_blocks_used == 0);
  CHECK(stats.generated_tokens < 2 * 3 * 3);  // the accepted choices were stopped, not all run to the end
}
