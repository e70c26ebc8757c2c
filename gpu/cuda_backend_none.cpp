// The CUDA backend's entry points in a build without CUDA: they say so.
#include <stdexcept>

#include "inflight/cuda_backend.hpp"

namespace inflight {

bool cuda_backend_available(std::string* reason) {
  if (reason) *reason = "this build of inflight has no CUDA backend (nvcc >= 12 was not found at configure time)";
  return false;
}

std::unique_ptr<backend> make_cuda_backend(std::shared_ptr<const gguf::gguf_file>, const cuda_backend_options&) {
  throw std::runtime_error("this build of inflight has no CUDA backend; use --device cpu");
}

std::unique_ptr<backend> make_dummy_cuda_backend(const std::string&, uint64_t, const cuda_backend_options&) {
  throw std::runtime_error("this build of inflight has no CUDA backend; use --device cpu");
}

}  // namespace inflight
