// Error checking for CUDA runtime calls and kernel launches: a failure throws std::runtime_error naming
// the call, file and line, so the executor can fail one step's sequences instead of crashing the server.
#pragma once

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace inflight::gpu {

inline void throw_cuda_error(cudaError_t status, const char* what, const char* file, int line) {
  throw std::runtime_error(std::string(what) + " failed: " + cudaGetErrorString(status) + " (" + file + ":" +
                           std::to_string(line) + ")");
}

}  // namespace inflight::gpu

#define INFLIGHT_CUDA_CHECK(call)                                                         \
  do {                                                                                    \
    if (const cudaError_t inflight_status_ = (call); inflight_status_ != cudaSuccess)    \
      ::inflight::gpu::throw_cuda_error(inflight_status_, #call, __FILE__, __LINE__);     \
  } while (0)

// After a kernel launch: launch-configuration errors surface here, not at the next synchronisation.
#define INFLIGHT_CUDA_CHECK_LAUNCH() INFLIGHT_CUDA_CHECK(cudaGetLastError())
