// Which backend a command runs on, from its options: `--device auto|cpu|cuda` and the settings of each.
// Shared by `inflight generate`, `inflight serve` and the benchmarks, so they pick and describe backends
// the same way. `auto` is CUDA when this build has it and a device is present, the CPU otherwise.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "inflight/backend.hpp"

namespace inflight {
namespace gguf { class gguf_file; }
}

namespace inflight::cli {

struct backend_choice {
  std::string device = "auto";       // auto | cpu | cuda
  int threads = 0;                   // CPU: 0 = every core
  int64_t kv_cache_mb = 1024;        // CPU: KV cache memory
  int32_t block_size = 16;
  double gpu_memory_fraction = 0.9;  // CUDA: share of device memory for weights, activations and KV cache
  bool cuda_graphs = true;           // CUDA: decode steps as CUDA graphs
  int32_t max_step_sequences = 64;
  int32_t max_step_tokens = 512;
  void (*on_load_progress)(int done, int total, void* context) = nullptr;  // CPU loading only (load_progress.hpp)
  void* load_progress_context = nullptr;
};

// "cpu" or "cuda": what `auto` resolves to here. Throws usage_error for an unknown device name and
// std::runtime_error when "cuda" is asked for where it cannot run (the message says why).
std::string resolve_device(const std::string& device);

std::unique_ptr<backend> make_backend(std::shared_ptr<const gguf::gguf_file> file, const backend_choice& choice);

}  // namespace inflight::cli
