// Per-layer kernels of the CUDA backend (see layer_kernels.hpp for the contracts).
//
// All of them are memory-bound: the design goal is 16-byte loads and stores (8 bf16 per access) and no
// more passes over global memory than needed. fp32 arithmetic throughout, one rounding per stored value.
#include "layer_kernels.hpp"

#include <stdexcept>
#include <string>

#include "cuda_check.hpp"
#include "kernel_helpers.cuh"

namespace inflight::gpu {
namespace {

using bf16 = __nv_bfloat16;

int round_up_to_warps(int64_t threads, int max_threads) {
  const int64_t rounded = (threads + 31) / 32 * 32;
  return int(rounded < 32 ? 32 : (rounded > max_threads ? max_threads : rounded));
}

// ---- gather (embedding and row gather) -------------------------------------------------------------------

// One CTA per output row. Vectorised: `units` counts 16-byte vectors; else single elements.
template <bool vectorised>
__global__ void gather_rows_kernel(const bf16* __restrict__ src, int32_t num_src_rows, int32_t cols,
                                   const int32_t* __restrict__ row_indices, bf16* __restrict__ out) {
  const int32_t row = blockIdx.x;
  int32_t index = row_indices[row];
  index = index < 0 ? 0 : (index >= num_src_rows ? num_src_rows - 1 : index);  // clamp, see header
  const bf16* from = src + int64_t(index) * cols;
  bf16* to = out + int64_t(row) * cols;
  if constexpr (vectorised) {
    const uint4* from_vec = reinterpret_cast<const uint4*>(from);
    uint4* to_vec = reinterpret_cast<uint4*>(to);
    for (int32_t i = threadIdx.x; i < cols / 8; i += blockDim.x) to_vec[i] = from_vec[i];
  } else {
    for (int32_t i = threadIdx.x; i < cols; i += blockDim.x) to[i] = from[i];
  }
}

void launch_gather(const bf16* src, int32_t num_src_rows, int32_t cols, const int32_t* row_indices, int32_t num_rows,
                   bf16* out, cudaStream_t stream) {
  if (num_rows == 0) return;
  const bool vectorised = cols % 8 == 0 && aligned16(src) && aligned16(out);
  const int threads = round_up_to_warps(vectorised ? cols / 8 : cols, 256);
  if (vectorised) {
    gather_rows_kernel<true><<<num_rows, threads, 0, stream>>>(src, num_src_rows, cols, row_indices, out);
  } else {
    gather_rows_kernel<false><<<num_rows, threads, 0, stream>>>(src, num_src_rows, cols, row_indices, out);
  }
  INFLIGHT_CUDA_CHECK_LAUNCH();
}

// ---- RMSNorm -------------------------------------------------------------------------------------------

// Sum over the CTA (blockDim.x a multiple of 32, <= 1024); every thread gets the total. Fixed reduction
// tree, so the result does not depend on anything but the row (batch invariance).
__device__ float block_sum(float value) {
  __shared__ float warp_sums[32];
  __shared__ float total;
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) value += __shfl_xor_sync(0xffffffffu, value, offset);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) warp_sums[warp] = value;
  __syncthreads();
  if (warp == 0) {
    const int num_warps = blockDim.x / 32;
    value = lane < num_warps ? warp_sums[lane] : 0.0f;
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) value += __shfl_xor_sync(0xffffffffu, value, offset);
    if (lane == 0) total = value;
  }
  __syncthreads();
  return total;
}

// One CTA per row. Pass 1: (residual + x) rounded to bf16, stored back when add_x, squares summed.
// Pass 2: each thread re-reads exactly the elements it wrote (its own writes are visible to it; the row
// comes from L1/L2), scales and writes out.
template <bool vectorised, bool add_x>
__global__ void rms_norm_kernel(const bf16* src, bf16* residual_out, const bf16* __restrict__ x,
                                const bf16* __restrict__ weight, int32_t hidden, float eps, bf16* __restrict__ out) {
  const int64_t row_offset = int64_t(blockIdx.x) * hidden;
  const bf16* src_row = src + row_offset;
  float sum_squares = 0.0f;
  if constexpr (vectorised) {
    const int32_t num_vectors = hidden / 8;
    for (int32_t i = threadIdx.x; i < num_vectors; i += blockDim.x) {
      float values[8];
      unpack8(reinterpret_cast<const uint4*>(src_row)[i], values);
      if constexpr (add_x) {
        float addend[8];
        unpack8(reinterpret_cast<const uint4*>(x + row_offset)[i], addend);
#pragma unroll
        for (int j = 0; j < 8; ++j) values[j] += addend[j];
        const uint4 rounded = pack8(values);
        reinterpret_cast<uint4*>(residual_out + row_offset)[i] = rounded;
        unpack8(rounded, values);
      }
#pragma unroll
      for (int j = 0; j < 8; ++j) sum_squares += values[j] * values[j];
    }
  } else {
    for (int32_t i = threadIdx.x; i < hidden; i += blockDim.x) {
      float value = __bfloat162float(src_row[i]);
      if constexpr (add_x) {
        const bf16 rounded = __float2bfloat16(value + __bfloat162float(x[row_offset + i]));
        residual_out[row_offset + i] = rounded;
        value = __bfloat162float(rounded);
      }
      sum_squares += value * value;
    }
  }
  const float inverse_rms = rsqrtf(block_sum(sum_squares) / float(hidden) + eps);

  const bf16* normed_row = add_x ? residual_out + row_offset : src_row;
  if constexpr (vectorised) {
    const int32_t num_vectors = hidden / 8;
    for (int32_t i = threadIdx.x; i < num_vectors; i += blockDim.x) {
      float values[8], scale[8];
      unpack8(reinterpret_cast<const uint4*>(normed_row)[i], values);
      unpack8(reinterpret_cast<const uint4*>(weight)[i], scale);
#pragma unroll
      for (int j = 0; j < 8; ++j) values[j] = values[j] * inverse_rms * scale[j];
      reinterpret_cast<uint4*>(out + row_offset)[i] = pack8(values);
    }
  } else {
    for (int32_t i = threadIdx.x; i < hidden; i += blockDim.x) {
      out[row_offset + i] =
          __float2bfloat16(__bfloat162float(normed_row[i]) * inverse_rms * __bfloat162float(weight[i]));
    }
  }
}

template <bool add_x>
void launch_rms_norm(const bf16* src, bf16* residual_out, const bf16* x, const bf16* weight, int32_t num_tokens,
                     int32_t hidden, float eps, bf16* out, cudaStream_t stream) {
  const bool vectorised = hidden % 8 == 0 && aligned16(src) && aligned16(residual_out) && aligned16(x) &&
                          aligned16(weight) && aligned16(out);
  const int threads = round_up_to_warps(vectorised ? hidden / 8 : hidden, 1024);
  if (vectorised) {
    rms_norm_kernel<true, add_x><<<num_tokens, threads, 0, stream>>>(src, residual_out, x, weight, hidden, eps, out);
  } else {
    rms_norm_kernel<false, add_x><<<num_tokens, threads, 0, stream>>>(src, residual_out, x, weight, hidden, eps, out);
  }
  INFLIGHT_CUDA_CHECK_LAUNCH();
}

void validate_rms_norm(const void* weight, int32_t num_tokens, int32_t hidden, float eps, const void* out) {
  require(num_tokens >= 0, "rms_norm: num_tokens must be >= 0");
  require(hidden > 0, "rms_norm: hidden must be > 0");
  require(eps >= 0.0f, "rms_norm: eps must be >= 0");
  require(weight != nullptr, "rms_norm: weight is null");
  require(out != nullptr, "rms_norm: out is null");
}

// ---- RoPE + K/V cache write ----------------------------------------------------------------------------

constexpr int rope_threads = 128;
constexpr int rope_max_head_dim = 256;

// One CTA per token. The token's cos/sin table (rope_dims / 2 pairs, shared by every head) goes to shared
// memory first; then each thread handles 8 consecutive dimensions (one 16-byte vector) of one head at a
// time: q heads, k heads (rotated in place, k also copied to the cache), then v heads (copied).
__global__ void __launch_bounds__(rope_threads)
    rope_and_write_kv_kernel(bf16* __restrict__ qkv, int64_t row_stride, int32_t num_q_heads, int32_t num_kv_heads,
                             int32_t head_dim, int32_t rope_dims, const int32_t* __restrict__ positions,
                             const float* __restrict__ inv_freq, const int64_t* __restrict__ slot_mapping,
                             bf16* __restrict__ k_cache, bf16* __restrict__ v_cache, int64_t num_cache_slots) {
  const int32_t token = blockIdx.x;
  const int64_t slot = slot_mapping[token];
  if (slot < 0 || slot >= num_cache_slots) return;  // padding row (-1): the whole CTA leaves, before any barrier

  __shared__ float cos_table[rope_max_head_dim / 2];
  __shared__ float sin_table[rope_max_head_dim / 2];
  const float position = float(positions[token]);
  for (int32_t pair = threadIdx.x; pair < rope_dims / 2; pair += blockDim.x) {
    // Accurate sincosf (full range reduction): angles reach position * 1.0 rad, thousands of radians.
    sincosf(position * inv_freq[pair], &sin_table[pair], &cos_table[pair]);
  }
  __syncthreads();

  bf16* row = qkv + int64_t(token) * row_stride;
  const int32_t vectors_per_head = head_dim / 8;
  const int32_t rotated_vectors = (num_q_heads + num_kv_heads) * vectors_per_head;  // q then k, contiguous
  const int32_t total_vectors = rotated_vectors + num_kv_heads * vectors_per_head;  // then v
  const int64_t cache_offset = slot * num_kv_heads * head_dim;
  for (int32_t unit = threadIdx.x; unit < total_vectors; unit += blockDim.x) {
    const int32_t head = unit / vectors_per_head;  // 0 .. num_q_heads + 2 * num_kv_heads - 1
    const int32_t dim = (unit - head * vectors_per_head) * 8;
    uint4* element = reinterpret_cast<uint4*>(row + int64_t(unit) * 8);  // == row + head * head_dim + dim
    uint4 raw = *element;
    if (unit < rotated_vectors && dim < rope_dims) {
      float values[8];
      unpack8(raw, values);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int32_t pair = dim / 2 + j;
        if (pair < rope_dims / 2) {
          const float x0 = values[2 * j], x1 = values[2 * j + 1];
          values[2 * j] = x0 * cos_table[pair] - x1 * sin_table[pair];
          values[2 * j + 1] = x0 * sin_table[pair] + x1 * cos_table[pair];
        }
      }
      raw = pack8(values);
      *element = raw;
    }
    if (head >= num_q_heads + num_kv_heads) {
      const int32_t kv_head = head - num_q_heads - num_kv_heads;
      *reinterpret_cast<uint4*>(v_cache + cache_offset + int64_t(kv_head) * head_dim + dim) = raw;
    } else if (head >= num_q_heads) {
      const int32_t kv_head = head - num_q_heads;
      *reinterpret_cast<uint4*>(k_cache + cache_offset + int64_t(kv_head) * head_dim + dim) = raw;
    }
  }
}

// ---- SiLU * mul -----------------------------------------------------------------------------------------

__device__ __forceinline__ float silu(float gate) { return gate / (1.0f + expf(-gate)); }

constexpr int silu_threads = 256;
constexpr int64_t silu_max_blocks = 4096;  // grid-stride beyond this

template <bool vectorised>
__global__ void __launch_bounds__(silu_threads)
    silu_mul_kernel(const bf16* __restrict__ gate_up, int32_t ffn, int64_t total_units, bf16* __restrict__ out) {
  const int32_t units_per_row = vectorised ? ffn / 8 : ffn;
  for (int64_t unit = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; unit < total_units;
       unit += int64_t(gridDim.x) * blockDim.x) {
    const int64_t token = unit / units_per_row;
    const int32_t column = int32_t(unit - token * units_per_row);
    const bf16* gate = gate_up + token * 2 * ffn;
    if constexpr (vectorised) {
      float g[8], u[8];
      unpack8(reinterpret_cast<const uint4*>(gate)[column], g);
      unpack8(reinterpret_cast<const uint4*>(gate + ffn)[column], u);
#pragma unroll
      for (int j = 0; j < 8; ++j) g[j] = silu(g[j]) * u[j];
      reinterpret_cast<uint4*>(out + token * ffn)[column] = pack8(g);
    } else {
      out[token * ffn + column] =
          __float2bfloat16(silu(__bfloat162float(gate[column])) * __bfloat162float(gate[ffn + column]));
    }
  }
}

}  // namespace

void embed_tokens(const int32_t* token_ids, int32_t num_tokens, const bf16* table, int32_t vocab_size, int32_t hidden,
                  bf16* out, cudaStream_t stream) {
  require(num_tokens >= 0, "embed_tokens: num_tokens must be >= 0");
  require(vocab_size > 0, "embed_tokens: vocab_size must be > 0");
  require(hidden > 0, "embed_tokens: hidden must be > 0");
  if (num_tokens == 0) return;
  require(token_ids != nullptr, "embed_tokens: token_ids is null");
  require(table != nullptr, "embed_tokens: table is null");
  require(out != nullptr, "embed_tokens: out is null");
  launch_gather(table, vocab_size, hidden, token_ids, num_tokens, out, stream);
}

void gather_rows(const bf16* src, int32_t num_src_rows, int32_t cols, const int32_t* row_indices, int32_t num_rows,
                 bf16* out, cudaStream_t stream) {
  require(num_rows >= 0, "gather_rows: num_rows must be >= 0");
  require(num_src_rows > 0, "gather_rows: num_src_rows must be > 0");
  require(cols > 0, "gather_rows: cols must be > 0");
  if (num_rows == 0) return;
  require(src != nullptr, "gather_rows: src is null");
  require(row_indices != nullptr, "gather_rows: row_indices is null");
  require(out != nullptr, "gather_rows: out is null");
  launch_gather(src, num_src_rows, cols, row_indices, num_rows, out, stream);
}

void add_rms_norm(bf16* residual, const bf16* x, const bf16* weight, int32_t num_tokens, int32_t hidden, float eps,
                  bf16* out, cudaStream_t stream) {
  validate_rms_norm(weight, num_tokens, hidden, eps, out);
  require(residual != nullptr, "add_rms_norm: residual is null");
  require(out != residual, "add_rms_norm: out must not alias residual");
  if (num_tokens == 0) return;
  if (x != nullptr) {
    launch_rms_norm<true>(residual, residual, x, weight, num_tokens, hidden, eps, out, stream);
  } else {
    launch_rms_norm<false>(residual, nullptr, nullptr, weight, num_tokens, hidden, eps, out, stream);
  }
}

void rms_norm(const bf16* in, const bf16* weight, int32_t num_tokens, int32_t hidden, float eps, bf16* out,
              cudaStream_t stream) {
  validate_rms_norm(weight, num_tokens, hidden, eps, out);
  require(in != nullptr, "rms_norm: in is null");
  if (num_tokens == 0) return;
  launch_rms_norm<false>(in, nullptr, nullptr, weight, num_tokens, hidden, eps, out, stream);
}

void rope_and_write_kv(bf16* qkv, int64_t row_stride, int32_t num_tokens, int32_t num_q_heads, int32_t num_kv_heads,
                       int32_t head_dim, int32_t rope_dims, const int32_t* positions, const float* inv_freq,
                       const int64_t* slot_mapping, bf16* k_cache, bf16* v_cache, int64_t num_cache_slots,
                       cudaStream_t stream) {
  require(num_tokens >= 0, "rope_and_write_kv: num_tokens must be >= 0");
  require(num_q_heads > 0, "rope_and_write_kv: num_q_heads must be > 0");
  require(num_kv_heads > 0, "rope_and_write_kv: num_kv_heads must be > 0");
  require(head_dim > 0 && head_dim % 8 == 0 && head_dim <= rope_max_head_dim,
          "rope_and_write_kv: head_dim must be a multiple of 8 in [8, 256]");
  require(rope_dims >= 0 && rope_dims % 2 == 0 && rope_dims <= head_dim,
          "rope_and_write_kv: rope_dims must be even and in [0, head_dim]");
  require(row_stride % 8 == 0 && row_stride >= int64_t(num_q_heads + 2 * num_kv_heads) * head_dim,
          "rope_and_write_kv: row_stride must be a multiple of 8 and >= (num_q_heads + 2 * num_kv_heads) * head_dim");
  require(num_cache_slots > 0, "rope_and_write_kv: num_cache_slots must be > 0");
  if (num_tokens == 0) return;
  require(qkv != nullptr && aligned16(qkv), "rope_and_write_kv: qkv must be non-null and 16-byte aligned");
  require(k_cache != nullptr && aligned16(k_cache), "rope_and_write_kv: k_cache must be non-null and 16-byte aligned");
  require(v_cache != nullptr && aligned16(v_cache), "rope_and_write_kv: v_cache must be non-null and 16-byte aligned");
  require(positions != nullptr, "rope_and_write_kv: positions is null");
  require(slot_mapping != nullptr, "rope_and_write_kv: slot_mapping is null");
  require(rope_dims == 0 || inv_freq != nullptr, "rope_and_write_kv: inv_freq is null");
  rope_and_write_kv_kernel<<<num_tokens, rope_threads, 0, stream>>>(qkv, row_stride, num_q_heads, num_kv_heads,
                                                                    head_dim, rope_dims, positions, inv_freq,
                                                                    slot_mapping, k_cache, v_cache, num_cache_slots);
  INFLIGHT_CUDA_CHECK_LAUNCH();
}

void silu_mul(const bf16* gate_up, int32_t num_tokens, int32_t ffn, bf16* out, cudaStream_t stream) {
  require(num_tokens >= 0, "silu_mul: num_tokens must be >= 0");
  require(ffn > 0, "silu_mul: ffn must be > 0");
  if (num_tokens == 0) return;
  require(gate_up != nullptr, "silu_mul: gate_up is null");
  require(out != nullptr, "silu_mul: out is null");
  const bool vectorised = ffn % 8 == 0 && aligned16(gate_up) && aligned16(out);
  const int64_t total_units = int64_t(num_tokens) * (vectorised ? ffn / 8 : ffn);
  int64_t blocks = (total_units + silu_threads - 1) / silu_threads;
  if (blocks > silu_max_blocks) blocks = silu_max_blocks;
  if (vectorised) {
    silu_mul_kernel<true><<<unsigned(blocks), silu_threads, 0, stream>>>(gate_up, ffn, total_units, out);
  } else {
    silu_mul_kernel<false><<<unsigned(blocks), silu_threads, 0, stream>>>(gate_up, ffn, total_units, out);
  }
  INFLIGHT_CUDA_CHECK_LAUNCH();
}

}  // namespace inflight::gpu
