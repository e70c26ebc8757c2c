// The CUDA backend's weights as it uploads them: bf16, with the projections that read the same input
// fused into one matrix (Q/K/V into attn_qkv, gate/up into ffn_gate_up), so each layer runs four GEMMs.
// Produced one tensor at a time, so an 8B model never sits in host memory whole. No CUDA here: the
// layout is unit-tested on machines without a GPU (tests/test_bf16_weights.cpp).
//
// Tensors, in visiting order (rows x cols, row-major; a linear layer's row is one output feature):
//   token_embd          vocab x hidden
//   blk.L.attn_norm     1 x hidden
//   blk.L.attn_qkv      (q_size + 2 kv_size) x hidden      rows: Q heads, then K heads, then V heads
//   blk.L.attn_output   hidden x q_size
//   blk.L.ffn_norm      1 x hidden
//   blk.L.ffn_gate_up   (2 ffn) x hidden                   rows: gate, then up
//   blk.L.ffn_down      hidden x ffn
//   output_norm         1 x hidden
//   output              vocab x hidden                     absent when the embeddings are tied
//
// Q and K rows stay as GGUF stores them: permuted for RoPE on adjacent pairs, as the CPU backend uses them.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "inflight/model_config.hpp"

namespace inflight {
namespace gguf { class gguf_file; }
}

namespace inflight::gpu {

struct bf16_tensor {
  std::string name;
  int64_t rows = 0, cols = 0;
  std::vector<uint16_t> values;  // bf16 bits, rows * cols
};

using bf16_tensor_visitor = std::function<void(const bf16_tensor&)>;

// Dequantizes the model's tensors (any type the GGUF reader supports) and rounds them to bf16.
// Throws gguf::gguf_error for a missing tensor or an unexpected shape.
void for_each_bf16_weight(const gguf::gguf_file& file, const model_config& config, const bf16_tensor_visitor& visit);

// Random weights of the config's shape (dummy-weights mode: throughput without a download). Linear layers
// draw from a uniform distribution with the standard deviation Hugging Face initialises them with
// (`initializer_range`, 0.02), norms are 1. The same seed gives the same weights.
void for_each_dummy_weight(const model_config& config, uint64_t seed, const bf16_tensor_visitor& visit);

// A model shape from a Hugging Face config.json (config/llama-3.1-8b.json, config/smollm2-135m.json):
// hidden_size, intermediate_size, num_hidden_layers, num_attention_heads, num_key_value_heads, vocab_size,
// max_position_embeddings, rope_theta, rms_norm_eps, tie_word_embeddings, head_dim (optional). Throws
// std::runtime_error naming the file and the missing or malformed field.
model_config model_config_from_hf_json(const std::string& path);

// RoPE's per-pair inverse frequencies for the kernels (angle = position * inv_freq[i]): the base, the
// linear scale and, when given, Llama-3.1's per-pair frequency factors (GGUF rope_freqs.weight), exactly
// as the CPU backend's rope_angles computes them.
std::vector<float> rope_inverse_frequencies(const model_config& config, const std::vector<float>& freq_factors = {});

}  // namespace inflight::gpu
