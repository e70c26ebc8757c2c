// A histogram with fixed bucket bounds, as Prometheus keeps them: counts per bucket, plus sum and count.
// A plain value (no CAF, no locking), so the engine's actors can keep one, send a copy with their stats,
// and the server can render it as-is (net/server_metrics.cpp).
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

namespace inflight {

struct bucket_histogram {
  std::vector<double> upper_bounds;  // ascending; a last, implicit bucket is +Inf
  std::vector<int64_t> counts;       // per bucket, not cumulative: upper_bounds.size() + 1 entries
  double sum = 0;
  int64_t count = 0;

  bucket_histogram() = default;
  explicit bucket_histogram(std::vector<double> bounds)
      : upper_bounds(std::move(bounds)), counts(upper_bounds.size() + 1, 0) {}

  // Counts `value` in the first bucket whose bound is >= value (Prometheus' "le").
  void observe(double value) {
    size_t bucket = 0;
    while (bucket < upper_bounds.size() && value > upper_bounds[bucket]) ++bucket;
    ++counts[bucket];
    sum += value;
    ++count;
  }
};

}  // namespace inflight
