// Faults under the server: a backend that fails chosen steps or stalls (tests/fault_backend.hpp). The
// requests in a failed step end with an OpenAI error (500 before anything was streamed, an SSE error
// event or a WebSocket error frame after), /metrics counts them, no KV block leaks, and the engine goes on
// serving; a stalled step does not stall the server.
#include "http_test_support.hpp"

#include <atomic>
#include <string>
#include <thread>

#include "fault_backend.hpp"

using namespace inflight;
using namespace inflight::test;

namespace {

struct faulty_server {
  fault_backend* faults = nullptr;  // owned by the engine
  test_server served;
  explicit faulty_server(fault_plan plan, engine_options options = {})
      : served(options, {}, [this, plan](std::unique_ptr<backend> inner) {
          auto wrapped = std::make_unique<fault_backend>(std::move(inner), plan);
          faults = wrapped.get();
          return wrapped;
        }) {}
};

std::string metrics_of(uint16_t port) {
  // The engine's counters reach /metrics once a second.
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  return call(port, http::verb::get, "/metrics").body;
}

}  // namespace

TEST_CASE("a failing step: 500 before streaming, an SSE error event after, and the next request is served") {
  // Step 1 is the first request's prefill; step 6 falls in the streamed request's decoding.
  faulty_server server({{1, 6}, {}, {}});
  const uint16_t port = server.served.port;
  simdjson::dom::parser parser;

  const reply whole = post(port, "/v1/completions", R"({"prompt": "Once upon a time", "max_tokens": 8})");
  CHECK(whole.status == 500);
  CHECK(str(json(parser, whole.body)["error"]["type"]) == "server_error");
  CHECK(str(json(parser, whole.body)["error"]["message"]).find("injected device failure at step 1") != std::string::npos);

  const reply streamed = post(port, "/v1/completions",
                              R"({"prompt": "Once upon a time", "max_tokens": 30, "ignore_eos": true, "stream": true})");
  CHECK(streamed.status == 200);  // the status went out with the first chunk
  const std::vector<std::string> events = sse_events(streamed.body);
  REQUIRE(events.size() >= 3);
  CHECK(events.back() == "[DONE]");
  const std::string& error_event = events[events.size() - 2];
  CHECK(error_event.find("injected device failure at step 6") != std::string::npos);
  CHECK(str(json(parser, error_event)["error"]["type"]) == "server_error");
  CHECK(events.size() - 2 < 30);  // it did not run to the end

  // The engine carries on.
  // Greedy: a sampled answer may end (stop) within 4 tokens.
  const reply after = post(port, "/v1/completions", R"({"prompt": "The capital of France is", "max_tokens": 4, "temperature": 0})");
  CHECK(after.status == 200);
  CHECK(str(json(parser, after.body)["choices"].at(0)["finish_reason"]) == "length");
  CHECK(server.faults->failures() == 2);

  const std::string metrics = metrics_of(port);
  CHECK(metrics.find("inflight_requests_rejected_total{status=\"500\"} 1\n") != std::string::npos);
  CHECK(metrics.find("inflight_requests_finished_total{finish_reason=\"error\"} 1\n") != std::string::npos);
  CHECK(metrics.find("inflight_kv_blocks_used 0\n") != std::string::npos);
  CHECK(server.served.engine->stats().kv_blocks_used == 0);
}

TEST_CASE("a failing step ends a WebSocket request with an error frame, and the socket serves the next one") {
  faulty_server server({{3}, {}, {}});
  simdjson::dom::parser parser;
  ws_client client(server.served.port);
  client.send(R"({"id": 1, "prompt": "Once upon a time", "max_tokens": 20, "ignore_eos": true})");
  std::string frame;
  do frame = client.receive();
  while (str(json(parser, frame)["type"]) == "delta");
  CHECK(str(json(parser, frame)["type"]) == "error");
  CHECK(int64_t(json(parser, frame)["id"]) == 1);
  CHECK(str(json(parser, frame)["error"]["message"]).find("injected device failure at step 3") != std::string::npos);
  client.send(R"({"id": 2, "prompt": "Once upon a time", "max_tokens": 5, "ignore_eos": true})");
  do frame = client.receive();
  while (str(json(parser, frame)["type"]) == "delta");
  CHECK(str(json(parser, frame)["type"]) == "done");
  CHECK(int64_t(json(parser, frame)["usage"]["completion_tokens"]) == 5);
  CHECK(server.served.engine->stats().kv_blocks_used == 0);
}

TEST_CASE("a stalled step stalls its sequences only: the server answers and a client that leaves is cancelled") {
  faulty_server server({{}, {4}, std::chrono::milliseconds(2000)});
  const uint16_t port = server.served.port;
  // A streaming client that leaves while its step is stalled.
  asio::io_context io;
  tcp::socket socket(io);
  socket.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
  const std::string body = R"({"prompt": "Once upon a time", "max_tokens": 200, "ignore_eos": true, "stream": true})";
  asio::write(socket, asio::buffer("POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                   "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body));
  wait_for([&] { return server.faults->stalling(); });
  REQUIRE(server.faults->stalling());
  // The io thread is not the executor's: /health and /metrics answer while the step is still stalled.
  CHECK(call(port, http::verb::get, "/health").status == 200);
  CHECK(call(port, http::verb::get, "/metrics").status == 200);
  CHECK(server.faults->stalling());
  socket.close();
  // A request sent during the stall runs once it ends.
  const reply later = post(port, "/v1/completions", R"({"prompt": "The capital of France is", "max_tokens": 4})");
  CHECK(later.status == 200);
  wait_for([&] { return server.served.engine->stats().running == 0; });
  const engine_stats stats = server.served.engine->stats();
  CHECK(stats.cancelled == 1);
  CHECK(stats.kv_blocks_used == 0);
  CHECK(stats.generated_tokens < 200);
}
