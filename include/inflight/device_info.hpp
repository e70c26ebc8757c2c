// Which accelerators this build can use (CUDA only for now).
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace inflight {

struct gpu_device {
  std::string name;
  size_t total_memory_bytes = 0;
  int compute_major = 0;
  int compute_minor = 0;
};

bool cuda_compiled_in();
// Empty with `error` set when CUDA is absent or reports no usable device.
std::vector<gpu_device> list_cuda_devices(std::string& error);

}  // namespace inflight
