// Paged prefill attention (see prefill_attention.hpp for the contract, the tile map and the work split).
//
// Tensor-core kernel, one CTA = 4 warps = 64 query slots (slot = row * G + head_in_group) x one KV head:
//
//   smem_k  [64 keys ][D + 8]  bf16     K tile j (gathered through the block table, cp.async 16 B)
//   smem_qv [64 slots][D + 8]  bf16     the Q tile first (moved to registers), then V tile j
//
//   warp w owns slots 16w .. 16w+15:  S(16 x 64) = Q_w K_j^T   mma.sync m16n8k16, fp32 accumulators
//                                      online softmax in fp32 registers (exp2, quad shuffles)
//                                      O_w(16 x D) += P(bf16) V_j   (P reuses the S accumulator layout)
//
// The 8-element row padding shifts consecutive rows by 16 bytes, so the eight 16-byte rows that one
// ldmatrix phase reads fall in different bank groups (no conflicts). Pipeline per KV tile (single buffers,
// as FlashAttention-2): V_j is fetched while S = QK_j^T runs, K_{j+1} while O += PV_j runs.
//
// Masking: keys >= kv_len are never read from the cache (their smem rows are zero-filled, and the block table
// is not even consulted), so NaN garbage in unwritten slots cannot reach a product; keys past a row's causal
// limit get score -inf, hence p = 0 times finite V. KV tiles above the CTA's causal diagonal are not loaded,
// and a warp skips the math of tiles above its own diagonal (exact: such a tile would leave its state as is).
#include "prefill_attention.hpp"

#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

#include "cuda_check.hpp"

namespace inflight::gpu {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kSlots = prefill_tile_slots;  // query slots per CTA (16 per warp)
constexpr int kKeys = 64;                   // keys per KV tile
constexpr int kRefKeys = 128;               // keys per step of the reference kernel
static_assert(kSlots == kWarps * 16, "each warp owns one m16 row block of query slots");
static_assert(kSlots == kKeys, "smem_qv holds the Q tile, then V tiles");

// BEGIN device primitives (inline PTX; sm_80+)
__device__ __forceinline__ uint32_t smem_address(const void* pointer) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(pointer));
}

// 16-byte global -> shared copy, asynchronous (completes at cp_async_wait).
__device__ __forceinline__ void cp_async_16(void* smem_dst, const void* global_src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_address(smem_dst)), "l"(global_src)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
// Waits until at most `pending` of this thread's most recent groups are still in flight.
template <int pending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(pending) : "memory");
}

// Four 8x8 b16 matrices; lane l gives the address of row (l % 8) of matrix (l / 8); r[j] holds matrix j.
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* smem_row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_address(smem_row))
               : "memory");
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* smem_row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_address(smem_row))
               : "memory");
}

// d += a(16x16, row) * b(16x8, col), bf16 inputs, fp32 accumulators.
__device__ __forceinline__ void mma_bf16_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ float warp_shfl_xor(float value, int lane_mask) {
  return __shfl_xor_sync(0xffffffffu, value, lane_mask);
}
// END device primitives

__device__ __forceinline__ int min_int(int a, int b) { return a < b ? a : b; }

__device__ __forceinline__ uint32_t pack_bf16x2(float low, float high) {
  const __nv_bfloat162 pair = __floats2bfloat162_rn(low, high);  // .x (low 16 bits) = low
  uint32_t bits;
  memcpy(&bits, &pair, sizeof bits);
  return bits;
}

__device__ __forceinline__ void store_zero_16(void* smem_dst) {
  *static_cast<uint4*>(smem_dst) = make_uint4(0u, 0u, 0u, 0u);
}

// Gathers keys key_start .. key_start+63 of one KV head into a [64][D + 8] smem tile. Keys >= kv_len are
// zero-filled without touching the block table or the cache (their entries may be garbage or NaN).
template <int D>
__device__ __forceinline__ void load_kv_tile(__nv_bfloat16* smem_tile, const __nv_bfloat16* __restrict__ cache,
                                             const int32_t* __restrict__ block_table, int block_size, int kv_len,
                                             int key_start, int64_t token_stride, int head_offset, int tid) {
  constexpr int kChunksPerRow = D / 8;
  constexpr int kStride = D + 8;
#pragma unroll
  for (int i = 0; i < kKeys * kChunksPerRow / kThreads; ++i) {
    const int chunk_index = i * kThreads + tid;
    const int row = chunk_index / kChunksPerRow;
    const int chunk = chunk_index % kChunksPerRow;
    const int key = key_start + row;
    __nv_bfloat16* dst = smem_tile + row * kStride + chunk * 8;
    if (key < kv_len) {
      const int64_t block = block_table[key / block_size];
      const int64_t slot = block * block_size + key % block_size;
      cp_async_16(dst, cache + slot * token_stride + head_offset + chunk * 8);
    } else {
      store_zero_16(dst);
    }
  }
}

template <int D>
__global__ void __launch_bounds__(kThreads) prefill_attention_mma_kernel(const prefill_attention_params p) {
  constexpr int kStride = D + 8;
  constexpr int kChunksPerRow = D / 8;
  constexpr int kDSteps = D / 16;  // k-steps of S = QK^T, and 16-wide column pairs of O
  constexpr float kLog2e = 1.4426950408889634f;

  const int tile = blockIdx.x;
  const int kv_head = blockIdx.y;
  const int seq = p.tile_map[2 * tile];
  if (seq < 0 || seq >= p.num_seqs) return;
  const int row_start = p.tile_map[2 * tile + 1];
  const int q_begin = p.query_start_loc[seq];
  const int q_len = p.query_start_loc[seq + 1] - q_begin;
  const int kv_len = p.seq_lens[seq];
  if (row_start < 0 || row_start >= q_len) return;

  const int group = p.num_q_heads / p.num_kv_heads;
  const int rows = min_int(prefill_tile_slots / group, q_len - row_start);
  const int num_slots = rows * group;
  // Row r of this tile (sequence row row_start + r) sees keys 0 .. causal_base + r.
  const int causal_base = kv_len - q_len + row_start;
  const int cta_limit = causal_base + rows - 1;
  const int num_kv_tiles = cta_limit < 0 ? 0 : cta_limit / kKeys + 1;

  __shared__ __align__(128) __nv_bfloat16 smem_k[kKeys * kStride];
  __shared__ __align__(128) __nv_bfloat16 smem_qv[kSlots * kStride];

  const int tid = threadIdx.x;
  const int warp = tid / 32;
  const int lane = tid % 32;
  const int quad_row = lane / 4;  // accumulator rows quad_row and quad_row + 8 of the warp's 16
  const int quad_col = lane % 4;  // accumulator columns 2 * quad_col, +1 of each n8 tile

  const int64_t kv_token_stride = static_cast<int64_t>(p.num_kv_heads) * D;
  const int kv_head_offset = kv_head * D;
  const int32_t* block_table = p.block_tables + static_cast<int64_t>(seq) * p.block_table_stride;

  // Q tile -> smem_qv (cp.async group 1). Slot m = row * G + g holds head kv_head * G + g of row m / G.
#pragma unroll
  for (int i = 0; i < kSlots * kChunksPerRow / kThreads; ++i) {
    const int chunk_index = i * kThreads + tid;
    const int slot = chunk_index / kChunksPerRow;
    const int chunk = chunk_index % kChunksPerRow;
    __nv_bfloat16* dst = smem_qv + slot * kStride + chunk * 8;
    if (slot < num_slots) {
      const int64_t token = q_begin + row_start + slot / group;
      const int head = kv_head * group + slot % group;
      cp_async_16(dst, p.q + (token * p.num_q_heads + head) * D + chunk * 8);
    } else {
      store_zero_16(dst);
    }
  }
  cp_async_commit();
  // K tile 0 -> smem_k (group 2; empty when there is nothing to attend to).
  if (num_kv_tiles > 0)
    load_kv_tile<D>(smem_k, p.key_cache, block_table, p.block_size, kv_len, 0, kv_token_stride, kv_head_offset, tid);
  cp_async_commit();

  // This warp's slots and causal limits (-1: the slot is padding and sees nothing).
  const int slot0 = warp * 16 + quad_row;
  const int slot1 = slot0 + 8;
  const int limit0 = slot0 < num_slots ? causal_base + slot0 / group : -1;
  const int limit1 = slot1 < num_slots ? causal_base + slot1 / group : -1;
  const int warp_last_slot = min_int(warp * 16 + 15, num_slots - 1);
  const int warp_limit = warp * 16 < num_slots ? causal_base + warp_last_slot / group : -1;  // warp-uniform
  const float scale_log2 = p.scale * kLog2e;

  cp_async_wait<1>();  // the Q tile has landed (K tile 0 may still be in flight)
  __syncthreads();
  uint32_t q_frag[kDSteps][4] = {};
  if (warp_limit >= 0) {
#pragma unroll
    for (int kk = 0; kk < kDSteps; ++kk)
      ldmatrix_x4(q_frag[kk], smem_qv + (warp * 16 + lane % 16) * kStride + kk * 16 + (lane / 16) * 8);
  }
  __syncthreads();  // smem_qv is free for V tiles

  float o_acc[D / 8][4] = {};
  float row_max[2] = {-INFINITY, -INFINITY};
  float row_sum[2] = {0.0f, 0.0f};  // partial: this lane's columns only (summed over the quad at the end)

  for (int j = 0; j < num_kv_tiles; ++j) {
    const int key_start = j * kKeys;
    load_kv_tile<D>(smem_qv, p.value_cache, block_table, p.block_size, kv_len, key_start, kv_token_stride,
                    kv_head_offset, tid);
    cp_async_commit();
    cp_async_wait<1>();  // K tile j has landed (V tile j may still be in flight)
    __syncthreads();

    const bool warp_computes = key_start <= warp_limit;  // warp-uniform
    uint32_t p_frag[kKeys / 16][4];
    if (warp_computes) {
      float s[kKeys / 8][4] = {};
#pragma unroll
      for (int kk = 0; kk < kDSteps; ++kk) {
#pragma unroll
        for (int np = 0; np < kKeys / 16; ++np) {
          // Matrices: keys +0..7 / d +0..7, keys +0..7 / d +8..15, keys +8..15 / d +0..7, keys +8..15 / d +8..15.
          uint32_t b[4];
          ldmatrix_x4(b, smem_k + (np * 16 + lane % 8 + (lane / 16) * 8) * kStride + kk * 16 + ((lane / 8) % 2) * 8);
          mma_bf16_16816(s[2 * np], q_frag[kk], b[0], b[1]);
          mma_bf16_16816(s[2 * np + 1], q_frag[kk], b[2], b[3]);
        }
      }
      // Scale into the log2 domain and mask: key > limit (causal, or beyond kv_len, or padding slot) -> -inf.
#pragma unroll
      for (int nt = 0; nt < kKeys / 8; ++nt) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int key = key_start + nt * 8 + quad_col * 2 + e;
          s[nt][e] = key <= limit0 ? s[nt][e] * scale_log2 : -INFINITY;
          s[nt][2 + e] = key <= limit1 ? s[nt][2 + e] * scale_log2 : -INFINITY;
        }
      }
      // Online softmax, rows quad_row (r = 0) and quad_row + 8 (r = 1); a row spans the 4 lanes of a quad.
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        float tile_max = -INFINITY;
#pragma unroll
        for (int nt = 0; nt < kKeys / 8; ++nt) tile_max = fmaxf(tile_max, fmaxf(s[nt][2 * r], s[nt][2 * r + 1]));
        tile_max = fmaxf(tile_max, warp_shfl_xor(tile_max, 1));
        tile_max = fmaxf(tile_max, warp_shfl_xor(tile_max, 2));
        const float new_max = fmaxf(row_max[r], tile_max);
        // A row that has seen only masked keys keeps max -inf: subtract 0 instead (exp2(-inf) = 0, no NaN).
        const float base = new_max == -INFINITY ? 0.0f : new_max;
        const float alpha = exp2f(row_max[r] - base);
        row_max[r] = new_max;
        float tile_sum = 0.0f;
#pragma unroll
        for (int nt = 0; nt < kKeys / 8; ++nt) {
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const float prob = exp2f(s[nt][2 * r + e] - base);
            s[nt][2 * r + e] = prob;
            tile_sum += prob;
          }
        }
        row_sum[r] = row_sum[r] * alpha + tile_sum;
#pragma unroll
        for (int dt = 0; dt < D / 8; ++dt) {
          o_acc[dt][2 * r] *= alpha;
          o_acc[dt][2 * r + 1] *= alpha;
        }
      }
      // P as the A operand of P V: the m16n8 accumulators of key tiles 2ks and 2ks+1 are exactly the
      // (row, k) layout of an m16k16 A fragment.
#pragma unroll
      for (int ks = 0; ks < kKeys / 16; ++ks) {
        p_frag[ks][0] = pack_bf16x2(s[2 * ks][0], s[2 * ks][1]);
        p_frag[ks][1] = pack_bf16x2(s[2 * ks][2], s[2 * ks][3]);
        p_frag[ks][2] = pack_bf16x2(s[2 * ks + 1][0], s[2 * ks + 1][1]);
        p_frag[ks][3] = pack_bf16x2(s[2 * ks + 1][2], s[2 * ks + 1][3]);
      }
    }
    __syncthreads();  // every warp is done with smem_k
    if (j + 1 < num_kv_tiles)
      load_kv_tile<D>(smem_k, p.key_cache, block_table, p.block_size, kv_len, key_start + kKeys, kv_token_stride,
                      kv_head_offset, tid);
    cp_async_commit();   // possibly empty group: keeps the wait count below uniform
    cp_async_wait<1>();  // V tile j has landed
    __syncthreads();

    if (warp_computes) {
#pragma unroll
      for (int ks = 0; ks < kKeys / 16; ++ks) {
#pragma unroll
        for (int dp = 0; dp < kDSteps; ++dp) {
          // .trans matrices: keys +0..7 / d +0..7, keys +8..15 / d +0..7, keys +0..7 / d +8..15, keys +8..15 / d +8..15.
          uint32_t b[4];
          ldmatrix_x4_trans(b, smem_qv + (ks * 16 + lane % 8 + ((lane / 8) % 2) * 8) * kStride + dp * 16 + (lane / 16) * 8);
          mma_bf16_16816(o_acc[2 * dp], p_frag[ks], b[0], b[1]);
          mma_bf16_16816(o_acc[2 * dp + 1], p_frag[ks], b[2], b[3]);
        }
      }
    }
    __syncthreads();  // every warp is done with smem_qv before the next V tile lands there
  }

  // Normalise and store. Shuffles run on every lane; only real slots are written.
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float sum = row_sum[r];
    sum += warp_shfl_xor(sum, 1);
    sum += warp_shfl_xor(sum, 2);
    const float inv_sum = sum > 0.0f ? 1.0f / sum : 0.0f;
    const int slot = r == 0 ? slot0 : slot1;
    if (slot < num_slots) {
      const int64_t token = q_begin + row_start + slot / group;
      const int head = kv_head * group + slot % group;
      __nv_bfloat16* out_row = p.out + (token * p.num_q_heads + head) * D;
#pragma unroll
      for (int dt = 0; dt < D / 8; ++dt) {
        *reinterpret_cast<__nv_bfloat162*>(out_row + dt * 8 + quad_col * 2) =
            __floats2bfloat162_rn(o_acc[dt][2 * r] * inv_sum, o_acc[dt][2 * r + 1] * inv_sum);
      }
    }
  }
}

// Reference: one CTA per (query token, KV head), fp32 on CUDA cores. Scores for 128 keys at a time go to
// shared memory (thread t scores key t for every head of the group), then each thread accumulates its
// (head, dim) outputs. Same mask and the same never-read-past-kv_len rule as the tensor-core kernel.
template <int D>
__global__ void __launch_bounds__(kThreads) prefill_attention_reference_kernel(const prefill_attention_params p) {
  constexpr int kMaxPairs = prefill_max_gqa_group * D / kThreads;  // (head, dim) outputs per thread
  __shared__ float q_s[prefill_max_gqa_group][D];
  __shared__ float score_s[prefill_max_gqa_group][kRefKeys];
  __shared__ float max_s[prefill_max_gqa_group];
  __shared__ float sum_s[prefill_max_gqa_group];
  __shared__ float alpha_s[prefill_max_gqa_group];

  const int token = blockIdx.x;
  const int kv_head = blockIdx.y;
  if (token < p.query_start_loc[0] || token >= p.query_start_loc[p.num_seqs]) return;
  // The sequence holding this row: the last s with query_start_loc[s] <= token.
  int lo = 0;
  int hi = p.num_seqs - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (p.query_start_loc[mid] <= token) lo = mid; else hi = mid - 1;
  }
  const int seq = lo;
  const int q_len = p.query_start_loc[seq + 1] - p.query_start_loc[seq];
  const int row = token - p.query_start_loc[seq];
  const int limit = p.seq_lens[seq] - q_len + row;  // keys 0 .. limit
  const int group = p.num_q_heads / p.num_kv_heads;
  const int num_pairs = group * D;
  const int tid = threadIdx.x;
  const int warp = tid / 32;
  const int lane = tid % 32;
  const int64_t kv_token_stride = static_cast<int64_t>(p.num_kv_heads) * D;
  const int32_t* block_table = p.block_tables + static_cast<int64_t>(seq) * p.block_table_stride;

  for (int i = tid; i < num_pairs; i += kThreads) {
    const int g = i / D;
    q_s[g][i % D] = __bfloat162float(p.q[(static_cast<int64_t>(token) * p.num_q_heads + kv_head * group + g) * D + i % D]);
  }
  if (tid < group) {
    max_s[tid] = -INFINITY;
    sum_s[tid] = 0.0f;
  }
  float o_acc[kMaxPairs];
#pragma unroll
  for (int k = 0; k < kMaxPairs; ++k) o_acc[k] = 0.0f;
  __syncthreads();

  for (int key_start = 0; key_start <= limit; key_start += kRefKeys) {
    const int key = key_start + tid;
    if (key <= limit) {
      const int64_t slot = static_cast<int64_t>(block_table[key / p.block_size]) * p.block_size + key % p.block_size;
      const __nv_bfloat16* k_row = p.key_cache + slot * kv_token_stride + kv_head * D;
      for (int g = 0; g < group; ++g) {
        float dot = 0.0f;
        for (int d = 0; d < D; ++d) dot += q_s[g][d] * __bfloat162float(k_row[d]);
        score_s[g][tid] = dot * p.scale;
      }
    } else {
      for (int g = 0; g < group; ++g) score_s[g][tid] = -INFINITY;
    }
    __syncthreads();
    for (int g = warp; g < group; g += kWarps) {
      float tile_max = -INFINITY;
      for (int k = lane; k < kRefKeys; k += 32) tile_max = fmaxf(tile_max, score_s[g][k]);
      for (int mask = 16; mask > 0; mask /= 2) tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, mask));
      const float new_max = fmaxf(max_s[g], tile_max);  // finite: key_start <= limit, so key 0 of the step counts
      float tile_sum = 0.0f;
      for (int k = lane; k < kRefKeys; k += 32) {
        const float prob = expf(score_s[g][k] - new_max);
        score_s[g][k] = prob;
        tile_sum += prob;
      }
      for (int mask = 16; mask > 0; mask /= 2) tile_sum += __shfl_xor_sync(0xffffffffu, tile_sum, mask);
      __syncwarp();  // every lane has read max_s[g] before lane 0 replaces it
      if (lane == 0) {
        const float alpha = expf(max_s[g] - new_max);
        alpha_s[g] = alpha;
        sum_s[g] = sum_s[g] * alpha + tile_sum;
        max_s[g] = new_max;
      }
    }
    __syncthreads();
    const int num_keys = min_int(kRefKeys, limit - key_start + 1);
#pragma unroll
    for (int k = 0; k < kMaxPairs; ++k) {
      const int i = k * kThreads + tid;
      if (i < num_pairs) {
        const int g = i / D;
        const int d = i % D;
        float acc = o_acc[k] * alpha_s[g];
        for (int n = 0; n < num_keys; ++n) {
          const int key_n = key_start + n;
          const int64_t slot = static_cast<int64_t>(block_table[key_n / p.block_size]) * p.block_size + key_n % p.block_size;
          acc += score_s[g][n] * __bfloat162float(p.value_cache[slot * kv_token_stride + kv_head * D + d]);
        }
        o_acc[k] = acc;
      }
    }
    __syncthreads();  // score_s and alpha_s are rewritten by the next step
  }

#pragma unroll
  for (int k = 0; k < kMaxPairs; ++k) {
    const int i = k * kThreads + tid;
    if (i < num_pairs) {
      const int g = i / D;
      const float sum = sum_s[g];
      const float value = sum > 0.0f ? o_acc[k] / sum : 0.0f;
      p.out[(static_cast<int64_t>(token) * p.num_q_heads + kv_head * group + g) * D + i % D] = __float2bfloat16_rn(value);
    }
  }
}

[[noreturn]] void invalid(const std::string& what) { throw std::invalid_argument("prefill_attention: " + what); }

int checked_group(int num_q_heads, int num_kv_heads) {
  if (num_q_heads <= 0) invalid("num_q_heads must be positive (got " + std::to_string(num_q_heads) + ")");
  if (num_kv_heads <= 0) invalid("num_kv_heads must be positive (got " + std::to_string(num_kv_heads) + ")");
  if (num_q_heads % num_kv_heads != 0)
    invalid("num_q_heads (" + std::to_string(num_q_heads) + ") must be a multiple of num_kv_heads (" +
            std::to_string(num_kv_heads) + ")");
  const int group = num_q_heads / num_kv_heads;
  if (group > prefill_max_gqa_group)
    invalid("num_q_heads / num_kv_heads must be at most " + std::to_string(prefill_max_gqa_group) + " (got " +
            std::to_string(group) + ")");
  return group;
}

bool aligned(const void* pointer, uintptr_t alignment) {
  return reinterpret_cast<uintptr_t>(pointer) % alignment == 0;
}

void validate(const prefill_attention_params& p, prefill_attention_impl impl) {
  if (p.head_dim != 64 && p.head_dim != 128)
    invalid("head_dim must be 64 or 128 (got " + std::to_string(p.head_dim) + ")");
  checked_group(p.num_q_heads, p.num_kv_heads);
  if (p.num_kv_heads > 65535) invalid("num_kv_heads must be at most 65535 (grid.y)");
  if (p.num_tokens < 0) invalid("num_tokens must not be negative");
  if (p.num_seqs < 0) invalid("num_seqs must not be negative");
  if (p.max_query_tiles < 0) invalid("max_query_tiles must not be negative");
  if (p.block_size <= 0) invalid("block_size must be positive (got " + std::to_string(p.block_size) + ")");
  if (p.block_table_stride <= 0)
    invalid("block_table_stride must be positive (got " + std::to_string(p.block_table_stride) + ")");
  if (!std::isfinite(p.scale)) invalid("scale must be finite");
  if (p.q == nullptr) invalid("q is null");
  if (p.key_cache == nullptr) invalid("key_cache is null");
  if (p.value_cache == nullptr) invalid("value_cache is null");
  if (p.out == nullptr) invalid("out is null");
  if (p.query_start_loc == nullptr) invalid("query_start_loc is null");
  if (p.seq_lens == nullptr) invalid("seq_lens is null");
  if (p.block_tables == nullptr) invalid("block_tables is null");
  if (impl == prefill_attention_impl::tensor_core && p.tile_map == nullptr) invalid("tile_map is null");
  // 16-byte cp.async loads of q and the caches; 4-byte bf16x2 stores of out.
  if (!aligned(p.q, 16)) invalid("q must be 16-byte aligned");
  if (!aligned(p.key_cache, 16)) invalid("key_cache must be 16-byte aligned");
  if (!aligned(p.value_cache, 16)) invalid("value_cache must be 16-byte aligned");
  if (!aligned(p.out, 4)) invalid("out must be 4-byte aligned");
}

template <int D>
void launch(const prefill_attention_params& p, cudaStream_t stream, prefill_attention_impl impl) {
  const dim3 block(kThreads);
  if (impl == prefill_attention_impl::tensor_core) {
    const dim3 grid(static_cast<unsigned>(p.max_query_tiles), static_cast<unsigned>(p.num_kv_heads));
    prefill_attention_mma_kernel<D><<<grid, block, 0, stream>>>(p);
  } else {
    const dim3 grid(static_cast<unsigned>(p.num_tokens), static_cast<unsigned>(p.num_kv_heads));
    prefill_attention_reference_kernel<D><<<grid, block, 0, stream>>>(p);
  }
  INFLIGHT_CUDA_CHECK_LAUNCH();
}

}  // namespace

int prefill_query_rows_per_tile(int num_q_heads, int num_kv_heads) {
  return prefill_tile_slots / checked_group(num_q_heads, num_kv_heads);
}

int prefill_max_query_tiles(int max_num_tokens, int max_num_seqs, int num_q_heads, int num_kv_heads) {
  const int rows_per_tile = prefill_query_rows_per_tile(num_q_heads, num_kv_heads);
  if (max_num_tokens < 0) invalid("max_num_tokens must not be negative");
  if (max_num_seqs < 0) invalid("max_num_seqs must not be negative");
  const int64_t bound = (static_cast<int64_t>(max_num_tokens) + static_cast<int64_t>(max_num_seqs) * (rows_per_tile - 1)) /
                        rows_per_tile;
  return static_cast<int>(bound < max_num_tokens ? bound : max_num_tokens);
}

int build_prefill_tile_map(const int32_t* query_start_loc, int num_seqs, int num_q_heads, int num_kv_heads,
                           int32_t* tile_map, int max_query_tiles) {
  const int rows_per_tile = prefill_query_rows_per_tile(num_q_heads, num_kv_heads);
  if (num_seqs < 0) invalid("num_seqs must not be negative");
  if (max_query_tiles < 0) invalid("max_query_tiles must not be negative");
  if (num_seqs > 0 && query_start_loc == nullptr) invalid("query_start_loc is null");
  if (max_query_tiles > 0 && tile_map == nullptr) invalid("tile_map is null");
  int count = 0;
  for (int seq = 0; seq < num_seqs; ++seq) {
    const int q_len = query_start_loc[seq + 1] - query_start_loc[seq];
    if (q_len < 0) invalid("query_start_loc decreases at sequence " + std::to_string(seq));
    // Last tile first: it has the most keys, and long CTAs should start early.
    for (int first_row = (q_len - 1) / rows_per_tile * rows_per_tile; q_len > 0 && first_row >= 0;
         first_row -= rows_per_tile) {
      if (count == max_query_tiles)
        invalid("the step needs more than max_query_tiles (" + std::to_string(max_query_tiles) + ") query tiles");
      tile_map[2 * count] = seq;
      tile_map[2 * count + 1] = first_row;
      ++count;
    }
  }
  for (int i = count; i < max_query_tiles; ++i) {
    tile_map[2 * i] = -1;
    tile_map[2 * i + 1] = 0;
  }
  return count;
}

void prefill_attention(const prefill_attention_params& params, cudaStream_t stream, prefill_attention_impl impl) {
  validate(params, impl);
  const int grid_x = impl == prefill_attention_impl::tensor_core ? params.max_query_tiles : params.num_tokens;
  if (params.num_seqs == 0 || grid_x == 0) return;
  if (params.head_dim == 64)
    launch<64>(params, stream, impl);
  else
    launch<128>(params, stream, impl);
}

}  // namespace inflight::gpu
