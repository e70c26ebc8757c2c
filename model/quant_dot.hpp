// Integer dot products between quantized weights and 8-bit-quantized activations, computed directly on
// the GGUF blocks (as llama.cpp's CPU backend does: a Q4_1 row is never expanded to floats).
//
// Activations are quantized per 32 values to int8 with one scale, mirroring ggml's quantize_row_q8_0/q8_1
// (scale amax/127 stored as fp16, round half to even), so our logits track llama.cpp's closely.
#pragma once

#include <cstddef>
#include <cstdint>

#include "inflight/ggml_type.hpp"

namespace inflight::kernels {

constexpr int act_block_values = 32;

// One block of quantized activations.
struct act_block {
  float d;         // scale (fp16-rounded, as ggml stores it)
  float ds;        // d * sum(qs), fp16-rounded: the Q4_1 "min" term needs it (ggml's block_q8_1::s)
  int8_t qs[act_block_values];
};

// A weight matrix as stored: `rows` output rows of `cols` inputs each, rows contiguous.
struct weight_matrix {
  ggml_type type = ggml_type::q8_0;
  const uint8_t* data = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
  size_t row_bytes = 0;
};

// Weight types with a direct kernel. Others are converted to Q8_0 at load time (see cpu_weights).
bool has_direct_kernel(ggml_type type);

// Quantizes n floats (a multiple of 32) into n/32 blocks.
void quantize_activations(const float* x, act_block* out, int64_t n);

// out[t * out_stride + r] = dot(weight row r, activation row t) for rows [row_begin, row_end) and
// tokens [0, num_tokens). Activation row t starts at act + t * (cols / 32).
// Each (row, token) result is computed by the same instruction sequence whatever num_tokens is, so a
// sequence's numbers do not depend on what else is in the batch.
void matmul(const weight_matrix& weights, const act_block* act, int64_t num_tokens, float* out, int64_t out_stride,
            int64_t row_begin, int64_t row_end);

// Sizes the calling thread's matmul scratch for up to max_tokens tokens of max_cols inputs, so that
// matmul never allocates (call it on every thread that will run matmul, before the first step).
void reserve_thread_scratch(int64_t max_tokens, int64_t max_cols);

// Converts one row of any readable type to Q8_0 blocks (for weights without a direct kernel).
void quantize_row_q8_0(const float* x, void* out_blocks, int64_t n);

}  // namespace inflight::kernels
