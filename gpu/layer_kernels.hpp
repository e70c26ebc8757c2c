// The CUDA backend's per-layer kernels, other than attention and GEMM: token embedding, residual add +
// RMSNorm, RoPE + K/V cache write, SiLU·mul and row gather. Host-callable launchers; the kernels live in
// layer_kernels.cu.
//
// Shared conventions (gpu/ kernels): activations are bf16, row-major [tokens][features]; all arithmetic is
// fp32 with one rounding to bf16 per stored value. Launchers validate their arguments on the host (throw
// std::invalid_argument naming the bad one), never allocate or synchronise (they are captured into CUDA
// graphs), size grids from host values only, and check the launch (INFLIGHT_CUDA_CHECK_LAUNCH, which
// throws std::runtime_error). A launch with zero rows is a no-op.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace inflight::gpu {

// out[t][:] = table[token_ids[t]][:] for t < num_tokens; table is [vocab_size][hidden].
// An id outside [0, vocab_size) is clamped into it (never read out of bounds); the host validates ids, so
// a clamped id means a bug upstream, not a case to handle.
void embed_tokens(const int32_t* token_ids, int32_t num_tokens, const __nv_bfloat16* table, int32_t vocab_size,
                  int32_t hidden, __nv_bfloat16* out, cudaStream_t stream);

// out[r][:] = src[row_indices[r]][:] for r < num_rows; src is [num_src_rows][cols], out [num_rows][cols].
// Indices are clamped into [0, num_src_rows) like embed_tokens'. Used to run the LM head only on each
// sequence's last token.
void gather_rows(const __nv_bfloat16* src, int32_t num_src_rows, int32_t cols, const int32_t* row_indices,
                 int32_t num_rows, __nv_bfloat16* out, cudaStream_t stream);

// Fused residual add + RMSNorm, one CTA per row:
//   residual[t] = bf16(residual[t] + x[t])          (skipped when x is null: the first layer, where the
//                                                      residual is the embedding itself)
//   out[t]      = bf16(residual[t] * rsqrt(mean(residual[t]^2) + eps) * weight)
// The norm is computed from the bf16-rounded residual (what the next layer reads), sum of squares in fp32.
// residual, x, out: [num_tokens][hidden]; weight: [hidden]. out must not alias residual. 16-byte vector
// loads when hidden % 8 == 0 and every pointer is 16-byte aligned, scalar loads otherwise (any hidden).
void add_rms_norm(__nv_bfloat16* residual, const __nv_bfloat16* x, const __nv_bfloat16* weight, int32_t num_tokens,
                  int32_t hidden, float eps, __nv_bfloat16* out, cudaStream_t stream);

// out[t] = bf16(in[t] * rsqrt(mean(in[t]^2) + eps) * weight): the final norm, no residual.
void rms_norm(const __nv_bfloat16* in, const __nv_bfloat16* weight, int32_t num_tokens, int32_t hidden, float eps,
              __nv_bfloat16* out, cudaStream_t stream);

// RoPE on q and k, then the K/V cache write, for each token t < num_tokens whose slot_mapping[t] != -1
// (rows with -1 are padding: nothing is read or written for them, q included).
//
// qkv is the fused QKV GEMM output, one row per token of row_stride elements (normally
// (num_q_heads + 2 * num_kv_heads) * head_dim):
//     [ q: num_q_heads * head_dim | k: num_kv_heads * head_dim | v: num_kv_heads * head_dim | ... ]
// q and k are rotated IN PLACE, by adjacent pairs (x[2i], x[2i+1]) — the GGUF Llama weight layout, not
// NeoX's half split — for pairs i < rope_dims / 2, by angle = float(positions[t]) * inv_freq[i]
// (inv_freq: rope_dims / 2 device floats precomputed by the caller, carrying the base, the linear scale
// and Llama 3.1's frequency factors: inv_freq[i] = freq_scale * base^(-2i/rope_dims) / factor[i], which
// is model/cpu_attention.cpp's rope_angles); dimensions >= rope_dims are left as they are.
// Then the rotated k and v are written to the layer's cache, K and V each
// [num_cache_slots = num_blocks * block_size][num_kv_heads][head_dim] bf16, at flat slot slot_mapping[t]
// (block_id * block_size + offset). A slot outside [0, num_cache_slots) other than -1 is skipped too
// (the host validates slots; this only keeps corrupt metadata from writing out of bounds).
// Requires head_dim % 8 == 0 and <= 256, rope_dims even and <= head_dim, row_stride % 8 == 0 and
// >= (num_q_heads + 2 * num_kv_heads) * head_dim, qkv / k_cache / v_cache 16-byte aligned.
void rope_and_write_kv(__nv_bfloat16* qkv, int64_t row_stride, int32_t num_tokens, int32_t num_q_heads,
                       int32_t num_kv_heads, int32_t head_dim, int32_t rope_dims, const int32_t* positions,
                       const float* inv_freq, const int64_t* slot_mapping, __nv_bfloat16* k_cache,
                       __nv_bfloat16* v_cache, int64_t num_cache_slots, cudaStream_t stream);

// out[t][j] = bf16(silu(gate_up[t][j]) * gate_up[t][ffn + j]), silu(g) = g / (1 + e^-g), all in fp32.
// gate_up: [num_tokens][2 * ffn] (the fused gate/up GEMM output), out: [num_tokens][ffn].
void silu_mul(const __nv_bfloat16* gate_up, int32_t num_tokens, int32_t ffn, __nv_bfloat16* out,
              cudaStream_t stream);

}  // namespace inflight::gpu
