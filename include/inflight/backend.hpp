// The narrow interface between the engine and a compute backend (CPU now, CUDA later): one call runs one
// step for many sequences, each with its own block table into the backend's paged KV cache.
//
// Paged KV cache (the same logical layout on every backend, as vLLM's NHD layout):
//
//   per layer:  K[num_blocks][block_size][num_kv_heads][head_dim]   (fp16 on the CPU, bf16 on CUDA)
//               V[num_blocks][block_size][num_kv_heads][head_dim]
//
//   token at position p of a sequence lives in block block_table[p / block_size], slot p % block_size.
//
// The backend owns the memory; who owns which block is decided outside (the KV manager). A block
// table must cover every position the step writes: [0, start_position + tokens.size()).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "inflight/model_config.hpp"
#include "inflight/sampling.hpp"

namespace inflight {

// One sequence's share of a step: a prefill chunk (many tokens) or a decode token (one).
struct sequence_chunk {
  std::span<const int32_t> tokens;       // the new tokens, at positions start_position, start_position+1, ...
  int32_t start_position = 0;            // tokens already in this sequence's KV cache
  std::span<const int32_t> block_table;  // physical block ids, in position order
  bool compute_logits = false;           // produce logits for the chunk's last token
};

struct kv_cache_geometry {
  int32_t block_size = 16;   // tokens per block
  int32_t num_blocks = 0;
};

class backend {
 public:
  virtual ~backend() = default;

  virtual const model_config& config() const = 0;
  virtual kv_cache_geometry kv_geometry() const = 0;
  // Most tokens (summed over sequences) one step may carry.
  virtual int32_t max_step_tokens() const = 0;
  // Most sequences (chunks) one step may carry; also the most logits rows one step writes.
  virtual int32_t max_step_sequences() const = 0;
  // One line for logs: the device, kernels, KV cache size.
  virtual std::string describe() const { return {}; }

  // Runs one forward step. Writes the K/V of every new token into its block, and for the i-th chunk with
  // compute_logits writes config().vocab_size logits at logits[i * vocab_size] (i counts only the chunks
  // that asked). Throws std::invalid_argument for a malformed step: too many tokens or sequences, a block
  // table that does not cover the positions, an out-of-range block or token id, two tokens writing one
  // KV slot, a logits buffer too small.
  virtual void forward(std::span<const sequence_chunk> chunks, std::span<float> logits) = 0;

  // Sampling where the logits are. A backend that answers true (the CUDA backend: its logits never cross
  // to the host) keeps one sampler per sequence and the executor calls the three functions below instead
  // of forward() and its own host samplers. The results must be those of inflight::sampler's semantics.
  virtual bool samples_on_device() const { return false; }
  // A sequence's sampler: its params, and its prompt for the repetition penalty. `sequence` > 0.
  virtual void add_sampler(uint64_t sequence, const sampling_params& params, std::span<const int32_t> prompt);
  // Forgets the sampler (unknown ids are ignored).
  virtual void remove_sampler(uint64_t sequence);
  // Runs forward(), then samples one token for each chunk with compute_logits, in order: samplers[i] names
  // the i-th such chunk's sampler (0: none; its result is token -1) and results[i] gets the sample
  // (logprobs as the sampler's params ask). Throws as forward() does, and for an unknown sampler.
  virtual void forward_and_sample(std::span<const sequence_chunk> chunks, std::span<const uint64_t> samplers,
                                  std::span<sample_result> results);
};

}  // namespace inflight
