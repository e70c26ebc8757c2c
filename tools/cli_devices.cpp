// `inflight devices`: what this build can run on. CPU always; CUDA devices when built with CUDA and a
// device is visible.
#include <cstdio>
#include <string>
#include <thread>

#include "cli_commands.hpp"
#include "inflight/device_info.hpp"

namespace inflight::cli {

int run_devices(int argc, char** argv) {
  if (argc > 1) {
    std::fprintf(stderr, "usage: inflight devices\n");
    return 2;
  }
  std::printf("cpu: %u hardware threads\n", std::thread::hardware_concurrency());
  std::string error;
  const auto devices = list_cuda_devices(error);
  if (devices.empty()) {
    std::printf("cuda: none (%s)\n", error.empty() ? "no device" : error.c_str());
    return 0;
  }
  for (size_t i = 0; i < devices.size(); ++i) {
    const auto& device = devices[i];
    std::printf("cuda:%zu: %s, %zu MiB, compute capability %d.%d\n", i, device.name.c_str(),
                device.total_memory_bytes >> 20, device.compute_major, device.compute_minor);
  }
  return 0;
}

}  // namespace inflight::cli
