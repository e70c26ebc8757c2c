// A test-only backend around a real one that fails or stalls on chosen forward passes (steps): the
// faults a device, a driver or an overloaded host produce, injected where the executor meets them.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <set>
#include <stdexcept>
#include <thread>

#include "inflight/backend.hpp"

namespace inflight::test {

struct fault_plan {
  std::set<int> fail_steps;   // 1-based forward passes that throw
  std::set<int> stall_steps;  // ... that sleep `stall` first (then run normally)
  std::chrono::milliseconds stall{0};
};

class fault_backend final : public backend {
 public:
  fault_backend(std::unique_ptr<backend> inner, fault_plan plan) : inner_(std::move(inner)), plan_(std::move(plan)) {}
  const model_config& config() const override { return inner_->config(); }
  kv_cache_geometry kv_geometry() const override { return inner_->kv_geometry(); }
  int32_t max_step_tokens() const override { return inner_->max_step_tokens(); }
  int32_t max_step_sequences() const override { return inner_->max_step_sequences(); }
  void forward(std::span<const sequence_chunk> chunks, std::span<float> logits) override {
    const int step = ++steps_;
    if (plan_.stall_steps.count(step)) {
      stalling_ = true;
      std::this_thread::sleep_for(plan_.stall);
      stalling_ = false;
    }
    if (plan_.fail_steps.count(step)) {
      ++failures_;
      throw std::runtime_error("injected device failure at step " + std::to_string(step));
    }
    inner_->forward(chunks, logits);
  }

  // Read from the test's thread while the executor runs.
  int steps() const { return steps_; }
  int failures() const { return failures_; }
  bool stalling() const { return stalling_; }

 private:
  std::unique_ptr<backend> inner_;
  fault_plan plan_;
  std::atomic<int> steps_{0}, failures_{0};
  std::atomic<bool> stalling_{false};
};

}  // namespace inflight::test
