// Lists CUDA devices through the runtime API; proves the CUDA toolchain builds and links.
#include <cuda_runtime.h>

#include "inflight/device_info.hpp"

namespace inflight {

bool cuda_compiled_in() { return true; }

std::vector<gpu_device> list_cuda_devices(std::string& error) {
  int count = 0;
  if (cudaError_t status = cudaGetDeviceCount(&count); status != cudaSuccess) {
    error = cudaGetErrorString(status);
    return {};
  }
  std::vector<gpu_device> devices;
  for (int index = 0; index < count; ++index) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, index) != cudaSuccess) continue;
    devices.push_back({prop.name, prop.totalGlobalMem, prop.major, prop.minor});
  }
  return devices;
}

}  // namespace inflight
