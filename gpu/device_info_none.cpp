// Built when the CUDA toolkit is absent: no devices.
#include "inflight/device_info.hpp"

namespace inflight {

bool cuda_compiled_in() { return false; }

std::vector<gpu_device> list_cuda_devices(std::string& error) {
  error = "inflight was built without CUDA";
  return {};
}

}  // namespace inflight
