// Attention pieces of the CPU forward pass: rotary embeddings, writing K/V into the paged cache, and
// causal attention of one query token over its sequence's paged K/V.
#pragma once

#include <cstdint>
#include <span>

namespace inflight::kernels {

struct attention_shape {
  int32_t num_heads = 0;
  int32_t num_kv_heads = 0;
  int32_t head_dim = 0;
  int32_t block_size = 0;
  int32_t queries_per_kv() const { return num_heads / num_kv_heads; }
};

// cos/sin of every rotated pair for one position, as ggml's rope cache computes them (theta multiplied
// up pair by pair in float, freq_scale applied, optional per-pair frequency factors as for Llama 3.1).
void rope_angles(int32_t position, int32_t rope_dims, float freq_base, float freq_scale,
                 const float* freq_factors /* nullable, rope_dims/2 values */, float* cos_out, float* sin_out);

// Rotates adjacent pairs (x[2i], x[2i+1]) of the first rope_dims values of each of num_heads heads
// (GGUF's Llama weights are permuted for exactly this pairing).
void apply_rope(float* x, int32_t num_heads, int32_t head_dim, int32_t rope_dims, const float* cos_values,
                const float* sin_values);

// Stores one token's K and V (num_kv_heads * head_dim floats each) into cache slot `slot`
// (= block * block_size + offset) as fp16.
void store_kv(const float* k, const float* v, uint16_t* k_cache, uint16_t* v_cache, int64_t slot,
              int32_t kv_values_per_token);

// Attention of one query token over positions [0, num_positions) for the query heads of kv head
// `kv_head`. q and out hold all num_heads heads; only this group's heads are read and written.
// `scratch` holds queries_per_kv * num_positions floats.
void attend(const float* q, const uint16_t* k_cache, const uint16_t* v_cache, std::span<const int32_t> block_table,
            int32_t num_positions, int32_t kv_head, const attention_shape& shape, float* out, float* scratch);

}  // namespace inflight::kernels
