// The HTTP server (Boost.Beast, C++20 coroutines on one io_context thread): OpenAI-compatible
// completions and chat completions, plain or streamed as server-sent events, over the engine, which is
// in this process or a gateway to engine nodes (inflight/cluster.hpp). Beast lives in the server's own
// translation units (server_state.hpp lists them; each costs half a minute to compile here); this header
// includes none of it.
//
//   GET  /                       a chat page (net/web/index.html, compiled in) streaming over /v1/ws
//   GET  /health, /ready         200 {"status":"ok"} (the server listens only once the engine runs; 503 once
//                                it has failed); a gateway lists its nodes, 503 while none is up
//   GET  /v1/models              the one model served
//   GET  /v1/nodes               a gateway's engine nodes: state, queue, running, KV usage, prefix hit rate
//   POST /v1/completions         prompt(s) -> choices; "stream": true for SSE chunks ending with [DONE]
//   POST /v1/chat/completions    messages -> choices
//   POST /tokenize               {"prompt"} -> {"tokens", "count"}: the ids the engine would see
//   POST /detokenize             {"tokens"} -> {"prompt"}
//   GET  /v1/ws                  WebSocket: several streamed requests per socket (protocol in http_server.cpp)
//   GET  /metrics                Prometheus text: outcomes, TTFT / inter-token / end-to-end histograms,
//                                the engine's queues, KV blocks, prefix-cache hit rate, token counters,
//                                queue-time and batch-size-per-step histograms
//
// Errors are OpenAI error objects: 400 for bad input (the field named), 404 for an unknown model or path,
// 405, 413 (body too large), 431 (headers too large), 429 with Retry-After when the waiting queue is
// full, 401 without a valid API key (when keys are set), 503 with Retry-After while shutting down or when a
// gateway has no node up, 502 when the engine node running a request died, 500 when the engine fails. A
// stream that fails after it started ends with an event {"error": {...}} and [DONE]. A client that goes
// away mid-request cancels it: its KV blocks are freed.
//
// Connections: at most max_connections open (beyond, 503 with Retry-After, then close); a request's headers
// must arrive within header_timeout of its first byte (slowloris), a kept-alive connection may idle for
// read_timeout; a WebSocket runs at most max_ws_requests requests at once, and stops reading while 256
// frames wait for a client that does not read them.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "openai_request.hpp"
#include "request_log.hpp"

namespace inflight {
class inference_engine;
}  // namespace inflight

namespace inflight::net {

struct server_options {
  std::string host = "127.0.0.1";
  uint16_t port = 8000;  // 0: any free port (see http_server::port())
  std::string model_name;  // what clients call the model; empty: the engine's name for it
  size_t body_limit = size_t(1) << 20;
  size_t header_limit = size_t(8) << 10;
  std::chrono::seconds read_timeout{30};  // idle: a kept-alive connection that sends nothing for this long
  // From a request's first byte to the end of its headers: a client that trickles its headers (slowloris)
  // is cut off after this long, however steadily it sends.
  std::chrono::seconds header_timeout{10};
  // Open connections at most (HTTP and WebSocket). Beyond, a new connection gets 503 with Retry-After and
  // is closed; inflight serve raises its open-file limit to fit.
  int32_t max_connections = 1024;
  // Requests running at once on one WebSocket; beyond, the next one gets an error frame (429).
  int32_t max_ws_requests = 32;
  // Non-empty: every endpoint but /health, /ready and the page wants "Authorization: Bearer <key>" with one
  // of these (a WebSocket upgrade may pass ?api_key=<key> instead, as browsers cannot set the header).
  std::vector<std::string> api_keys;
  request_limits limits;
  // One line per request on stderr (request_log.hpp); `off` for none.
  request_log_format request_log = request_log_format::text;
};

class http_server {
 public:
  // Binds at once (throws std::runtime_error naming the address when it cannot); serves after start().
  // `engine` must outlive the server; the model (tokenizer, name) comes from engine.model().
  http_server(inference_engine& engine, const server_options& options);
  ~http_server();  // stop()
  http_server(const http_server&) = delete;
  http_server& operator=(const http_server&) = delete;

  uint16_t port() const;
  // Serves on a thread of its own.
  void start();
  // Stops accepting, lets the requests in flight finish for up to `grace`, cancels the rest (they end
  // with finish_reason "abort"), waits for them, then stops the thread.
  void stop(std::chrono::milliseconds grace = std::chrono::milliseconds(0));

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace inflight::net
