// On-disk block layouts of the ggml quantized types (little-endian, packed as ggml writes them).
// Source of truth: ggml/src/ggml-common.h. Internal to model/: the dequantizers and the SIMD dot
// products both read these.
#pragma once

#include <cstdint>

namespace inflight::quant {

constexpr int qk4_0 = 32, qk4_1 = 32, qk5_0 = 32, qk5_1 = 32, qk8_0 = 32, qk8_1 = 32;
constexpr int qk_k = 256;            // super-block of the K-quants
constexpr int k_scale_size = 12;     // packed 6-bit scales/mins of Q4_K and Q5_K

#pragma pack(push, 1)
struct block_q4_0 { uint16_t d; uint8_t qs[qk4_0 / 2]; };
struct block_q4_1 { uint16_t d; uint16_t m; uint8_t qs[qk4_1 / 2]; };
struct block_q5_0 { uint16_t d; uint8_t qh[4]; uint8_t qs[qk5_0 / 2]; };
struct block_q5_1 { uint16_t d; uint16_t m; uint8_t qh[4]; uint8_t qs[qk5_1 / 2]; };
struct block_q8_0 { uint16_t d; int8_t qs[qk8_0]; };
// Activations quantized for dot products against Q4_1/Q5_1 weights: s = d * sum(qs).
struct block_q8_1 { uint16_t d; uint16_t s; int8_t qs[qk8_1]; };
struct block_q4_k { uint16_t d; uint16_t dmin; uint8_t scales[k_scale_size]; uint8_t qs[qk_k / 2]; };
struct block_q5_k { uint16_t d; uint16_t dmin; uint8_t scales[k_scale_size]; uint8_t qh[qk_k / 8]; uint8_t qs[qk_k / 2]; };
struct block_q6_k { uint8_t ql[qk_k / 2]; uint8_t qh[qk_k / 4]; int8_t scales[qk_k / 16]; uint16_t d; };
#pragma pack(pop)

static_assert(sizeof(block_q4_0) == 18);
static_assert(sizeof(block_q4_1) == 20);
static_assert(sizeof(block_q5_0) == 22);
static_assert(sizeof(block_q5_1) == 24);
static_assert(sizeof(block_q8_0) == 34);
static_assert(sizeof(block_q8_1) == 36);
static_assert(sizeof(block_q4_k) == 144);
static_assert(sizeof(block_q5_k) == 176);
static_assert(sizeof(block_q6_k) == 210);

}  // namespace inflight::quant
