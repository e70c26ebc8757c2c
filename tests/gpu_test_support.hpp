// Shared by the GPU kernel suites: whether a CUDA device is present (the tests build everywhere and run
// only where one is), device buffers that free themselves, and bf16 conversions for host references.
//
// A test without a device prints "SKIPPED: no CUDA device" and returns; ctest reports it as skipped
// (SKIP_REGULAR_EXPRESSION in tests/CMakeLists.txt), never as passed.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <doctest/doctest.h>

#include <cstdio>
#include <vector>

#include "cuda_check.hpp"

namespace inflight::gpu::testing {

inline bool cuda_device_present() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

// Holds `count` elements of T on the device.
template <class T>
class device_buffer {
 public:
  explicit device_buffer(size_t count) : count_(count) {
    INFLIGHT_CUDA_CHECK(cudaMalloc(&data_, count == 0 ? 1 : count * sizeof(T)));
  }
  explicit device_buffer(const std::vector<T>& host) : device_buffer(host.size()) { upload(host); }
  ~device_buffer() { cudaFree(data_); }
  device_buffer(const device_buffer&) = delete;
  device_buffer& operator=(const device_buffer&) = delete;

  T* get() const { return data_; }
  size_t size() const { return count_; }
  void upload(const std::vector<T>& host) {
    INFLIGHT_CUDA_CHECK(cudaMemcpy(data_, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
  }
  std::vector<T> download() const {
    std::vector<T> host(count_);
    INFLIGHT_CUDA_CHECK(cudaDeviceSynchronize());
    INFLIGHT_CUDA_CHECK(cudaMemcpy(host.data(), data_, count_ * sizeof(T), cudaMemcpyDeviceToHost));
    return host;
  }

 private:
  T* data_ = nullptr;
  size_t count_ = 0;
};

inline std::vector<__nv_bfloat16> to_bf16(const std::vector<float>& values) {
  std::vector<__nv_bfloat16> out(values.size());
  for (size_t i = 0; i < values.size(); ++i) out[i] = __float2bfloat16(values[i]);
  return out;
}

inline std::vector<float> to_float(const std::vector<__nv_bfloat16>& values) {
  std::vector<float> out(values.size());
  for (size_t i = 0; i < values.size(); ++i) out[i] = __bfloat162float(values[i]);
  return out;
}

// Rounds like an upload to bf16 and back: host references compute from what the device actually sees.
inline std::vector<float> round_to_bf16(const std::vector<float>& values) { return to_float(to_bf16(values)); }

}  // namespace inflight::gpu::testing

// First statement of every GPU test case.
#define INFLIGHT_REQUIRE_CUDA_DEVICE()                      \
  do {                                                     \
    if (!::inflight::gpu::testing::cuda_device_present()) { \
      std::puts("SKIPPED: no CUDA device");                \
      return;                                              \
    }                                                      \
  } while (0)
