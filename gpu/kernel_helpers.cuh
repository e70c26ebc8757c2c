// Small pieces the gpu/*.cu kernels share: 8 bf16 <-> one 16-byte vector, and the host-side argument
// checks of the launchers. Included by .cu files only (device code); everything is internal linkage.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>
#include <stdexcept>

namespace inflight::gpu {
namespace {

__device__ __forceinline__ void unpack8(const uint4& raw, float (&values)[8]) {
  const __nv_bfloat162* pairs = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 pair = __bfloat1622float2(pairs[i]);
    values[2 * i] = pair.x;
    values[2 * i + 1] = pair.y;
  }
}

__device__ __forceinline__ uint4 pack8(const float (&values)[8]) {
  uint4 raw;
  __nv_bfloat162* pairs = reinterpret_cast<__nv_bfloat162*>(&raw);
#pragma unroll
  for (int i = 0; i < 4; ++i) pairs[i] = __floats2bfloat162_rn(values[2 * i], values[2 * i + 1]);
  return raw;
}

inline bool aligned16(const void* pointer) { return reinterpret_cast<uintptr_t>(pointer) % 16 == 0; }

// A launcher's argument check: throws std::invalid_argument with `message` (which names the argument).
inline void require(bool condition, const char* message) {
  if (!condition) throw std::invalid_argument(message);
}

}  // namespace
}  // namespace inflight::gpu
