// What GET /metrics reports, in Prometheus' text format (version 0.0.4): request outcomes and latency
// histograms measured by the HTTP server, plus a snapshot of the engine's own counters and gauges.
//
// Not thread-safe on purpose: the server updates and renders it on its one io thread. The engine snapshot
// is refreshed by a separate thread (engine stats are a blocking actor round-trip, which must not run on
// the io thread) and handed in through set_engine_stats under the server's lock.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "inflight/bucket_histogram.hpp"
#include "inflight/engine.hpp"

namespace inflight::net {

// Appends a histogram's HELP/TYPE lines and its cumulative _bucket, _sum and _count lines.
void render_histogram(std::string& out, const bucket_histogram& histogram, const std::string& name,
                      const std::string& help);

class server_metrics {
 public:
  server_metrics();

  void record_finish(engine::finish_reason reason);
  void record_rejection(int http_status);  // a request refused before generating (4xx/5xx)
  void observe_time_to_first_token(double seconds) { time_to_first_token_.observe(seconds); }
  void observe_inter_token_latency(double seconds) { inter_token_latency_.observe(seconds); }
  void observe_end_to_end(double seconds) { end_to_end_.observe(seconds); }
  void count_refused_connection() { ++refused_connections_; }  // beyond max_connections
  void set_open_connections(int32_t open) { open_connections_ = open; }
  void set_engine_stats(const engine_stats& stats) { engine_ = stats; }
  // A gateway's engine nodes (empty for an engine in this process): rendered per node.
  void set_nodes(std::vector<node_status> nodes) { nodes_ = std::move(nodes); }

  std::string render() const;

 private:
  void render_nodes(std::string& out) const;

  std::array<uint64_t, 7> finished_{};  // by engine::finish_reason
  std::vector<std::pair<int, uint64_t>> rejected_;  // (status, count)
  uint64_t refused_connections_ = 0;
  int32_t open_connections_ = 0;
  bucket_histogram time_to_first_token_, inter_token_latency_, end_to_end_;
  engine_stats engine_;
  std::vector<node_status> nodes_;
};

}  // namespace inflight::net
