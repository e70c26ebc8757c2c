// Scalar dequantizers, one per ggml type. Each follows ggml-quants.c's dequantize_row_* exactly —
// the same element order and the same float operations in the same order — so weights dequantized here
// match llama.cpp's bit for bit. They run at load time or in tests, not in the hot loop.
#include <cstring>
#include <stdexcept>
#include <string>

#include "inflight/half.hpp"
#include "inflight/quant.hpp"
#include "quant_blocks.hpp"

namespace inflight {
namespace {

using namespace quant;

void dequantize_f32(const void* src, float* dst, int64_t n) {
  std::memcpy(dst, src, size_t(n) * sizeof(float));
}

void dequantize_f16(const void* src, float* dst, int64_t n) {
  const auto* bytes = static_cast<const uint8_t*>(src);
  for (int64_t i = 0; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, bytes + 2 * i, 2);  // the source may be only 2-byte aligned inside a mapping
    dst[i] = fp16_to_fp32(h);
  }
}

void dequantize_bf16(const void* src, float* dst, int64_t n) {
  const auto* bytes = static_cast<const uint8_t*>(src);
  for (int64_t i = 0; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, bytes + 2 * i, 2);
    dst[i] = bf16_to_fp32(h);
  }
}

// Q4_0 / Q4_1: byte j holds value j in its low nibble and value j+16 in its high nibble.
void dequantize_q4_0(const block_q4_0* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = fp16_to_fp32(x[i].d);
    for (int j = 0; j < qk4_0 / 2; ++j) {
      const int x0 = (x[i].qs[j] & 0x0f) - 8;
      const int x1 = (x[i].qs[j] >> 4) - 8;
      y[i * qk4_0 + j] = x0 * d;
      y[i * qk4_0 + j + qk4_0 / 2] = x1 * d;
    }
  }
}

void dequantize_q4_1(const block_q4_1* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = fp16_to_fp32(x[i].d);
    const float m = fp16_to_fp32(x[i].m);
    for (int j = 0; j < qk4_1 / 2; ++j) {
      const int x0 = x[i].qs[j] & 0x0f;
      const int x1 = x[i].qs[j] >> 4;
      y[i * qk4_1 + j] = x0 * d + m;
      y[i * qk4_1 + j + qk4_1 / 2] = x1 * d + m;
    }
  }
}

// Q5_0 / Q5_1: bit j of the little-endian u32 qh is the 5th bit of value j (j = 0..31).
void dequantize_q5_0(const block_q5_0* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = fp16_to_fp32(x[i].d);
    uint32_t qh;
    std::memcpy(&qh, x[i].qh, sizeof qh);
    for (int j = 0; j < qk5_0 / 2; ++j) {
      const uint8_t xh_0 = ((qh >> (j + 0)) << 4) & 0x10;
      const uint8_t xh_1 = ((qh >> (j + 12))) & 0x10;
      const int32_t x0 = ((x[i].qs[j] & 0x0f) | xh_0) - 16;
      const int32_t x1 = ((x[i].qs[j] >> 4) | xh_1) - 16;
      y[i * qk5_0 + j] = x0 * d;
      y[i * qk5_0 + j + qk5_0 / 2] = x1 * d;
    }
  }
}

void dequantize_q5_1(const block_q5_1* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = fp16_to_fp32(x[i].d);
    const float m = fp16_to_fp32(x[i].m);
    uint32_t qh;
    std::memcpy(&qh, x[i].qh, sizeof qh);
    for (int j = 0; j < qk5_1 / 2; ++j) {
      const uint8_t xh_0 = ((qh >> (j + 0)) << 4) & 0x10;
      const uint8_t xh_1 = ((qh >> (j + 12))) & 0x10;
      const int x0 = (x[i].qs[j] & 0x0f) | xh_0;
      const int x1 = (x[i].qs[j] >> 4) | xh_1;
      y[i * qk5_1 + j] = x0 * d + m;
      y[i * qk5_1 + j + qk5_1 / 2] = x1 * d + m;
    }
  }
}

void dequantize_q8_0(const block_q8_0* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = fp16_to_fp32(x[i].d);
    for (int j = 0; j < qk8_0; ++j) y[i * qk8_0 + j] = x[i].qs[j] * d;
  }
}

// The 12 scale bytes of Q4_K/Q5_K hold eight 6-bit scales and eight 6-bit mins:
//   bytes 0-3:  scale j (j<4) in bits 0-5, top 2 bits of scale j+4 in bits 6-7
//   bytes 4-7:  min j   (j<4) in bits 0-5, top 2 bits of min j+4   in bits 6-7
//   bytes 8-11: low 4 bits of scale j+4 in bits 0-3, low 4 bits of min j+4 in bits 4-7
void get_scale_min_k4(int j, const uint8_t* q, uint8_t* d, uint8_t* m) {
  if (j < 4) {
    *d = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *d = (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4);
  }
}

// Q4_K: four groups of 64 values; a group's 32 bytes give its first 32 values (low nibbles, sub-block
// 2g) and its next 32 values (high nibbles, sub-block 2g+1).
void dequantize_q4_k(const block_q4_k* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const uint8_t* q = x[i].qs;
    const float d = fp16_to_fp32(x[i].d);
    const float min = fp16_to_fp32(x[i].dmin);
    int is = 0;
    uint8_t sc, m;
    for (int j = 0; j < qk_k; j += 64) {
      get_scale_min_k4(is + 0, x[i].scales, &sc, &m);
      const float d1 = d * sc;
      const float m1 = min * m;
      get_scale_min_k4(is + 1, x[i].scales, &sc, &m);
      const float d2 = d * sc;
      const float m2 = min * m;
      for (int l = 0; l < 32; ++l) *y++ = d1 * (q[l] & 0x0f) - m1;
      for (int l = 0; l < 32; ++l) *y++ = d2 * (q[l] >> 4) - m2;
      q += 32;
      is += 2;
    }
  }
}

// Q5_K: as Q4_K; the 5th bit of value l of group g's low (high) half is bit 2g (2g+1) of qh[l].
void dequantize_q5_k(const block_q5_k* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const uint8_t* ql = x[i].qs;
    const uint8_t* qh = x[i].qh;
    const float d = fp16_to_fp32(x[i].d);
    const float min = fp16_to_fp32(x[i].dmin);
    int is = 0;
    uint8_t sc, m;
    uint8_t u1 = 1, u2 = 2;
    for (int j = 0; j < qk_k; j += 64) {
      get_scale_min_k4(is + 0, x[i].scales, &sc, &m);
      const float d1 = d * sc;
      const float m1 = min * m;
      get_scale_min_k4(is + 1, x[i].scales, &sc, &m);
      const float d2 = d * sc;
      const float m2 = min * m;
      for (int l = 0; l < 32; ++l) *y++ = d1 * ((ql[l] & 0x0f) + (qh[l] & u1 ? 16 : 0)) - m1;
      for (int l = 0; l < 32; ++l) *y++ = d2 * ((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
      ql += 32;
      is += 2;
      u1 <<= 2;
      u2 <<= 2;
    }
  }
}

// Q6_K: two halves of 128 values. In half h, ql[64h + l] holds values l (low nibble) and l+64 (high),
// ql[64h + l + 32] holds l+32 and l+96; qh[32h + l] holds their top two bits at bits 0,2,4,6.
// Each 16 values share one int8 scale.
void dequantize_q6_k(const block_q6_k* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = fp16_to_fp32(x[i].d);
    const uint8_t* ql = x[i].ql;
    const uint8_t* qh = x[i].qh;
    const int8_t* sc = x[i].scales;
    for (int n = 0; n < qk_k; n += 128) {
      for (int l = 0; l < 32; ++l) {
        const int is = l / 16;
        const int8_t q1 = int8_t((ql[l + 0] & 0x0f) | (((qh[l] >> 0) & 3) << 4)) - 32;
        const int8_t q2 = int8_t((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int8_t q3 = int8_t((ql[l + 0] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int8_t q4 = int8_t((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        y[l + 0] = d * sc[is + 0] * q1;
        y[l + 32] = d * sc[is + 2] * q2;
        y[l + 64] = d * sc[is + 4] * q3;
        y[l + 96] = d * sc[is + 6] * q4;
      }
      y += 128;
      ql += 64;
      qh += 32;
      sc += 8;
    }
  }
}

// Block structs are packed (alignment 1), so reading them straight from an unaligned mapping is fine.
template <class Block>
const Block* blocks(const void* src) {
  return static_cast<const Block*>(src);
}

}  // namespace

void dequantize_row(ggml_type type, const void* src, float* dst, int64_t n) {
  const ggml_type_traits* traits = find_type_traits(static_cast<uint32_t>(type));
  if (traits == nullptr) {
    throw std::invalid_argument("dequantize_row: unknown ggml type id " +
                                std::to_string(static_cast<uint32_t>(type)));
  }
  const auto block = static_cast<int64_t>(traits->block_elements);
  if (n < 0 || n % block != 0) {
    throw std::invalid_argument("dequantize_row: " + std::to_string(n) + " values of " + traits->name +
                                " is not a multiple of the block size " + std::to_string(block));
  }
  const int64_t nb = n / block;
  switch (type) {
    case ggml_type::f32: return dequantize_f32(src, dst, n);
    case ggml_type::f16: return dequantize_f16(src, dst, n);
    case ggml_type::bf16: return dequantize_bf16(src, dst, n);
    case ggml_type::q4_0: return dequantize_q4_0(blocks<block_q4_0>(src), dst, nb);
    case ggml_type::q4_1: return dequantize_q4_1(blocks<block_q4_1>(src), dst, nb);
    case ggml_type::q5_0: return dequantize_q5_0(blocks<block_q5_0>(src), dst, nb);
    case ggml_type::q5_1: return dequantize_q5_1(blocks<block_q5_1>(src), dst, nb);
    case ggml_type::q8_0: return dequantize_q8_0(blocks<block_q8_0>(src), dst, nb);
    case ggml_type::q4_k: return dequantize_q4_k(blocks<block_q4_k>(src), dst, nb);
    case ggml_type::q5_k: return dequantize_q5_k(blocks<block_q5_k>(src), dst, nb);
    case ggml_type::q6_k: return dequantize_q6_k(blocks<block_q6_k>(src), dst, nb);
    // Activation-side types: ggml never stores weights in them, and nothing here needs them as floats.
    case ggml_type::q8_1:
    case ggml_type::q8_k:
      break;
  }
  throw std::invalid_argument(std::string("dequantize_row: type ") + traits->name +
                              " cannot be dequantized");
}

}  // namespace inflight
