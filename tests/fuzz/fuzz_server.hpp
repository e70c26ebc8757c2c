// The real HTTP server (net/: Beast sessions, SSE, WebSocket) over an engine that answers at once, for
// the fuzz targets that feed it raw bytes over loopback TCP. The engine stand-in derives its answer from
// the request (a few deltas, logprobs when asked, an engine error for some max_tokens values), so the
// fuzzer reaches the streaming, logprobs and error paths without a model running.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>

#include "fuzz_model.hpp"
#include "http_server.hpp"
#include "inflight/engine.hpp"

namespace inflight::fuzz {

class instant_engine final : public inference_engine {
 public:
  instant_engine()
      : model_(std::make_shared<served_model>(served_model{"fuzz-model", default_tokenizer(), 2048})) {}

  request_id submit(generation_params params, std::shared_ptr<generation_sink> sink) override {
    generation_final result;
    result.prompt_tokens = int32_t(params.prompt_tokens.size() + params.prompt.size() / 4 + params.messages.size());
    if (params.max_tokens % 7 == 0) {
      result.reason = engine::finish_reason::error;
      result.error = params.max_tokens % 2 ? request_error::queue_full : request_error::internal;
      result.message = "injected engine error";
    } else {
      const bool with_sample = params.sampling.logprobs || params.sampling.top_logprobs > 0;
      const int32_t count = std::min(params.max_tokens, 3);
      for (int32_t i = 0; i < count; ++i) {
        generation_delta delta;
        delta.token = 100 + i;
        delta.text = i == 1 ? "" : "ab\xc3\xa9\"\n";
        delta.has_sample = with_sample;
        delta.sample.token = delta.token;
        delta.sample.logprob = -0.5f;
        delta.sample.num_top = std::min<int32_t>(params.sampling.top_logprobs, 2);
        for (int32_t k = 0; k < delta.sample.num_top; ++k) delta.sample.top[size_t(k)] = {200 + k, -1.0f - float(k)};
        sink->on_delta(delta);
        result.text += delta.text;
      }
      result.completion_tokens = count;
      result.reason = count == params.max_tokens ? engine::finish_reason::length : engine::finish_reason::stop;
    }
    sink->on_final(result);
    return ++next_id_;
  }
  void cancel(request_id) override {}
  engine_stats stats() override { return {}; }
  void wait_idle() override {}
  std::shared_ptr<const served_model> model() const override { return model_; }

 private:
  std::shared_ptr<const served_model> model_;
  request_id next_id_ = 0;  // the server submits from its one io thread
};

// One server for the whole fuzzing process.
struct fuzz_server {
  fuzz_server() {
    net::server_options options;
    options.port = 0;
    options.body_limit = 64 << 10;
    options.limits = {4, 8, 4, 16};
    options.api_keys = {"fuzz-key"};
    options.request_log = net::request_log_format::off;  // millions of requests: no line each
    server = std::make_unique<net::http_server>(engine, options);
    server->start();
  }
  instant_engine engine;
  std::unique_ptr<net::http_server> server;
};

inline uint16_t server_port() {
  static fuzz_server instance;
  return instance.server->port();
}

// A connection to the server, closed with a reset (no TIME_WAIT: a fuzzing run opens millions).
class client_connection {
 public:
  client_connection() {
    sockaddr_in at{};
    at.sin_family = AF_INET;
    at.sin_port = htons(server_port());
    at.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    // Each connection comes from the next of 65536 loopback source addresses (127.1.0.0/16): the server
    // closes first, so every connection leaves a client port in TIME_WAIT for a minute, and one source
    // address has only 28 000 ports. A connect that still fails for a second is a finding.
    static uint32_t next_source = 0;
    sockaddr_in from{};
    from.sin_family = AF_INET;
    from.sin_addr.s_addr = htonl((127u << 24) | (1u << 16) | (next_source++ & 0xFFFFu));
    for (int attempt = 0;; ++attempt) {
      fd_ = socket(AF_INET, SOCK_STREAM, 0);
      const int defer_port = 1;
      if (fd_ >= 0) setsockopt(fd_, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &defer_port, sizeof defer_port);
      if (fd_ >= 0 && bind(fd_, reinterpret_cast<sockaddr*>(&from), sizeof from) == 0 &&
          connect(fd_, reinterpret_cast<sockaddr*>(&at), sizeof at) == 0)
        break;
      const int error = errno;
      if (fd_ >= 0) close(fd_);
      if (attempt == 100) {
        std::fprintf(stderr, "fuzz: cannot connect to the server: %s\n", std::strerror(error));
        std::abort();
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    const linger reset{1, 0};
    setsockopt(fd_, SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
  }
  ~client_connection() { close(fd_); }

  // Sends what the server takes (it may close early, e.g. after a 413).
  void send_all(std::string_view bytes) {
    while (!bytes.empty()) {
      const ssize_t sent = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (sent <= 0) return;
      bytes.remove_prefix(size_t(sent));
    }
  }
  void finish_sending() { shutdown(fd_, SHUT_WR); }

  // Reads until `until` has been seen (empty: until the server closes). A server that neither answers
  // nor closes within the deadline, after the client said all it had to say, is a hang: abort, so that
  // libFuzzer keeps the input.
  std::string read(std::string_view until = {}, std::chrono::seconds deadline = std::chrono::seconds(10)) {
    std::string got;
    const auto give_up = std::chrono::steady_clock::now() + deadline;
    char chunk[16384];
    for (;;) {
      if (!until.empty() && got.find(until) != std::string::npos) return got;
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(give_up - std::chrono::steady_clock::now());
      if (left.count() <= 0) {
        std::fprintf(stderr, "fuzz: the server neither answered nor closed within %lld s\n",
                     static_cast<long long>(deadline.count()));
        std::abort();
      }
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, int(left.count())) <= 0) continue;
      const ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
      if (n <= 0) return got;  // closed (or reset)
      got.append(chunk, size_t(n));
    }
  }

 private:
  int fd_ = -1;
};

}  // namespace inflight::fuzz
