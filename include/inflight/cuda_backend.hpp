// The CUDA backend (gpu/): the same step interface and paged KV layout as the CPU backend, on one GPU,
// with weights in bf16, cuBLASLt GEMMs, the kernels of gpu/*.cu, sampling on the device (logits never
// cross to the host) and CUDA graphs for decode steps. No CUDA types here: the CLI and the engine compile
// without the CUDA headers, and in a build without CUDA, make_cuda_backend throws.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "inflight/backend.hpp"

namespace inflight {
namespace gguf { class gguf_file; }

struct cuda_backend_options {
  int device = 0;
  int32_t max_step_tokens = 2048;    // largest step (sum of chunk lengths)
  int32_t max_step_sequences = 256;  // largest number of chunks in one step (the decode batch)
  int32_t block_size = 16;           // tokens per KV block
  // KV cache: the blocks that fit in this share of the device's memory once weights and activations are
  // in place (vLLM's gpu_memory_utilization), unless num_blocks is set.
  double gpu_memory_fraction = 0.9;
  int32_t num_blocks = 0;
  bool cuda_graphs = true;  // capture decode steps per batch-size bucket and replay them
};

// True when this build has the CUDA backend and a device is present (`reason` says why not otherwise).
bool cuda_backend_available(std::string* reason = nullptr);

// The model's weights from a GGUF file, dequantized to bf16 at load. Throws std::runtime_error when there
// is no usable device or memory, gguf::gguf_error for an unusable model, std::invalid_argument for bad
// options.
std::unique_ptr<backend> make_cuda_backend(std::shared_ptr<const gguf::gguf_file> file, const cuda_backend_options& options);

// Random weights of the shape in a Hugging Face config.json (dummy-weights mode: large-model throughput
// without the weights; the tokens it generates mean nothing).
std::unique_ptr<backend> make_dummy_cuda_backend(const std::string& hf_config_path, uint64_t seed,
                                                 const cuda_backend_options& options);

}  // namespace inflight
