// The CPU backend: a batched, paged Llama forward pass computing directly on the GGUF's quantized blocks,
// multithreaded over all cores with SIMD kernels (AVX2, AVX-512 VNNI where compiled for).
//
// One forward() runs one step for any mix of prefill chunks and decode tokens; every weight matrix is
// streamed from memory once per step and serves every token in it. All scratch memory is sized at
// construction for max_step_tokens: a step allocates nothing.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "inflight/backend.hpp"

namespace inflight {
namespace gguf { class gguf_file; }

struct cpu_backend_options {
  int num_threads = 0;              // 0: one per hardware thread
  int32_t max_step_tokens = 512;    // largest step (sum of chunk lengths)
  int32_t max_step_sequences = 256; // largest number of chunks in one step
  int32_t block_size = 16;          // tokens per KV block
  int32_t num_blocks = 0;           // 0: derive from kv_cache_bytes
  size_t kv_cache_bytes = size_t(256) << 20;
  void (*on_load_progress)(int done, int total, void* context) = nullptr;
  void* load_progress_context = nullptr;
};

class cpu_backend final : public backend {
 public:
  // Keeps `file` alive (the weights point into its mapping). Throws gguf::gguf_error for an unusable
  // model and std::invalid_argument for bad options.
  cpu_backend(std::shared_ptr<const gguf::gguf_file> file, const cpu_backend_options& options);
  ~cpu_backend() override;

  const model_config& config() const override;
  kv_cache_geometry kv_geometry() const override;
  int32_t max_step_tokens() const override;
  int32_t max_step_sequences() const override;
  void forward(std::span<const sequence_chunk> chunks, std::span<float> logits) override;

  int num_threads() const;
  size_t kv_bytes_per_block() const;
  // Human-readable summary: threads, ISA of the kernels, KV cache size, converted weights.
  std::string describe() const override;

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace inflight
