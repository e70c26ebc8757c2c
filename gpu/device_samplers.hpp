// The CUDA backend's samplers: each sequence's sampling state on the host (params, seed, draw counter,
// the tokens its penalties apply to), staged each step into the per-row arrays launch_sample reads, and the
// results read back as inflight::sample_result. The logits stay on the device; only the sampled tokens
// (and logprobs when asked) come back.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <span>
#include <unordered_map>
#include <vector>

#include "inflight/sampling.hpp"
#include "sampling_kernels.hpp"

namespace inflight::gpu {

class device_samplers {
 public:
  device_samplers() = default;
  ~device_samplers();
  device_samplers(const device_samplers&) = delete;
  device_samplers& operator=(const device_samplers&) = delete;

  // Device buffers for up to `max_rows` rows per step.
  void allocate(int32_t max_rows, int32_t vocab_size);
  // Bytes of the per-row params, which the backend uploads with the step's metadata (fixed address:
  // a CUDA graph reads them).
  size_t staging_bytes() const { return sizeof(device_sampling_params) * size_t(max_rows_); }

  void add(uint64_t sequence, const sampling_params& params, std::span<const int32_t> prompt);
  void remove(uint64_t sequence) { sequences_.erase(sequence); }

  // Writes row r's params for samplers[r] (0: an unused row, greedy) into `staging` (pinned, uploaded by
  // the caller), and stages the penalty lists. Throws std::invalid_argument for an unknown sampler.
  void stage_rows(std::span<const uint64_t> samplers, void* staging);
  // Rows [used, padded) of a CUDA-graph bucket: unused.
  void pad_rows(int32_t used, int32_t padded, void* staging) const;
  // Whether any staged row has a penalty (its lists vary in size step to step: no CUDA graph then).
  bool staged_penalties() const { return staged_penalties_; }

  // Enqueues the sampling kernel for `rows` rows of logits, reading the params at `device_params`.
  void enqueue(float* logits, int32_t rows, void* device_params, cudaStream_t stream);
  // Waits for the stream, then copies each row's result out (token -1 for unused rows).
  void read_results(cudaStream_t stream, std::span<const uint64_t> samplers, std::span<sample_result> results);
  // After a step: each sampler's draw counter moves on and its sampled token counts for its penalties.
  void advance(std::span<const uint64_t> samplers, std::span<const sample_result> results);

 private:
  struct sequence_state {
    device_sampling_params params;
    bool penalized = false;
    std::vector<int32_t> tokens;                  // every token the penalties apply to, first-seen order
    std::unordered_map<int32_t, int32_t> index;   // token -> position in tokens / generated
    std::vector<int32_t> generated;               // times generated, parallel to tokens
  };
  void ensure_penalty_capacity(size_t entries);

  int32_t max_rows_ = 0, vocab_size_ = 0;
  std::unordered_map<uint64_t, sequence_state> sequences_;
  bool staged_penalties_ = false;
  // Device: outputs (one block: tokens, logprobs, num_top, top tokens, top logprobs) and penalty lists.
  void* outputs_ = nullptr;
  size_t outputs_bytes_ = 0;
  device_sample_outputs output_views_;
  void* host_outputs_ = nullptr;  // pinned mirror of outputs_
  int32_t* penalty_offsets_ = nullptr;  // [max_rows + 1]
  void* penalty_entries_ = nullptr;     // tokens, generated counts, saved logits: 3 x capacity
  size_t penalty_capacity_ = 0;
  std::vector<int32_t> host_offsets_, host_tokens_, host_counts_;
};

}  // namespace inflight::gpu
