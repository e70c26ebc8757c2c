#include "backend_choice.hpp"

#include <stdexcept>

#include "cli_options.hpp"
#include "inflight/cpu_backend.hpp"
#include "inflight/cuda_backend.hpp"

namespace inflight::cli {

std::string resolve_device(const std::string& device) {
  if (device != "auto" && device != "cpu" && device != "cuda")
    throw usage_error("--device: expected auto, cpu or cuda, got '" + device + "'");
  std::string reason;
  const bool cuda = cuda_backend_available(&reason);
  if (device == "cuda" && !cuda) throw std::runtime_error("--device cuda: no usable CUDA device (" + reason + ")");
  if (device == "auto") return cuda ? "cuda" : "cpu";
  return device;
}

std::unique_ptr<backend> make_backend(std::shared_ptr<const gguf::gguf_file> file, const backend_choice& choice) {
  if (resolve_device(choice.device) == "cuda") {
    cuda_backend_options options;
    options.max_step_tokens = choice.max_step_tokens;
    options.max_step_sequences = choice.max_step_sequences;
    options.block_size = choice.block_size;
    options.gpu_memory_fraction = choice.gpu_memory_fraction;
    options.cuda_graphs = choice.cuda_graphs;
    return make_cuda_backend(std::move(file), options);
  }
  cpu_backend_options options;
  options.num_threads = choice.threads;
  options.block_size = choice.block_size;
  options.kv_cache_bytes = size_t(choice.kv_cache_mb) << 20;
  options.max_step_sequences = choice.max_step_sequences;
  options.max_step_tokens = choice.max_step_tokens;
  options.on_load_progress = choice.on_load_progress;
  options.load_progress_context = choice.load_progress_context;
  return std::make_unique<cpu_backend>(std::move(file), options);
}

}  // namespace inflight::cli
