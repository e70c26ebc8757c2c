// The CPU backend's view of a Llama model's weights. Matrices whose type has a direct kernel (Q4_0, Q4_1,
// Q8_0) point into the memory-mapped GGUF file; any other type (F32, F16, BF16, Q5_x, K-quants) is
// converted once at load to Q8_0, which keeps the dot-product path uniform at a small memory cost.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "inflight/model_config.hpp"
#include "quant_dot.hpp"

namespace inflight {
namespace gguf { class gguf_file; struct tensor_info; }

struct cpu_layer_weights {
  std::vector<float> attn_norm;
  kernels::weight_matrix attn_q, attn_k, attn_v, attn_output;
  std::vector<float> ffn_norm;
  kernels::weight_matrix ffn_gate, ffn_up, ffn_down;
};

struct cpu_weights {
  kernels::weight_matrix token_embedding;  // vocab_size rows of hidden_size
  std::vector<cpu_layer_weights> layers;
  std::vector<float> output_norm;
  kernels::weight_matrix output;           // the LM head (== token_embedding when tied)
  std::vector<float> rope_freq_factors;    // empty unless the file has rope_freqs.weight (Llama 3.1)
  size_t converted_bytes = 0;              // memory owned for converted matrices

  // Throws gguf::gguf_error naming a missing tensor or a shape that disagrees with `config`.
  // `on_progress(done, total)` is called as layers load (the CLI draws a bar).
  static std::unique_ptr<cpu_weights> load(const gguf::gguf_file& file, const model_config& config,
                                           void (*on_progress)(int done, int total, void* context) = nullptr,
                                           void* progress_context = nullptr);

 private:
  std::vector<std::unique_ptr<uint8_t[]>> owned_;  // storage of converted matrices
  kernels::weight_matrix matrix(const gguf::gguf_file& file, const std::string& name, int64_t rows, int64_t cols);
};

}  // namespace inflight
