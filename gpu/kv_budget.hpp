// How many KV blocks the CUDA backend allocates: what the memory fraction leaves once everything else
// (weights, activations, the CUDA context, other processes) is in place, as vLLM's gpu_memory_utilization.
// Plain arithmetic, unit-tested without a GPU.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace inflight::gpu {

// total_bytes, free_bytes: cudaMemGetInfo after the weights and activation buffers are allocated.
// Throws std::invalid_argument naming the numbers when not even one block fits.
inline int32_t kv_blocks_for_memory(size_t total_bytes, size_t free_bytes, double fraction, size_t bytes_per_block) {
  if (!(fraction > 0.0 && fraction <= 1.0))
    throw std::invalid_argument("gpu memory fraction must be in (0, 1], got " + std::to_string(fraction));
  if (bytes_per_block == 0) throw std::invalid_argument("KV block size is 0 bytes");
  const double allowed = double(total_bytes) * fraction;
  const double in_use = double(total_bytes - free_bytes);
  const double budget = allowed - in_use;
  const double blocks = budget > 0 ? budget / double(bytes_per_block) : 0.0;
  if (blocks < 1.0) {
    throw std::invalid_argument("no room for the KV cache: " + std::to_string(in_use / double(1 << 20)) +
                                " MiB of " + std::to_string(double(total_bytes) / double(1 << 20)) +
                                " MiB are in use and the memory fraction allows " +
                                std::to_string(allowed / double(1 << 20)) + " MiB (raise --gpu-memory-fraction)");
  }
  return blocks > double(INT32_MAX) ? INT32_MAX : int32_t(blocks);
}

}  // namespace inflight::gpu
