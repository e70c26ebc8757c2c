#include "cpu_weights.hpp"

#include <vector>

#include "inflight/gguf.hpp"
#include "inflight/quant.hpp"

namespace inflight {

namespace {

std::vector<float> float_vector(const gguf::gguf_file& file, const std::string& name, int64_t size) {
  const auto& tensor = file.tensor(name);
  if (tensor.num_elements != uint64_t(size)) {
    throw gguf::gguf_error(file.path() + ": tensor '" + name + "' has " + std::to_string(tensor.num_elements) +
                           " values, expected " + std::to_string(size));
  }
  std::vector<float> values(static_cast<size_t>(size));
  dequantize_row(tensor.type, tensor.data, values.data(), size);
  return values;
}

}  // namespace

kernels::weight_matrix cpu_weights::matrix(const gguf::gguf_file& file, const std::string& name, int64_t rows,
                                           int64_t cols) {
  const auto& tensor = file.tensor(name);
  if (tensor.dims.size() != 2 || int64_t(tensor.dims[0]) != cols || int64_t(tensor.dims[1]) != rows) {
    throw gguf::gguf_error(file.path() + ": tensor '" + name + "' has an unexpected shape (expected " +
                           std::to_string(cols) + " x " + std::to_string(rows) + ")");
  }
  if (cols % kernels::act_block_values != 0) {
    throw gguf::gguf_error(file.path() + ": tensor '" + name + "' rows are not a multiple of 32 values");
  }
  kernels::weight_matrix matrix{tensor.type, tensor.data, rows, cols, tensor.row_bytes()};
  if (kernels::has_direct_kernel(tensor.type)) return matrix;

  // Convert row by row: dequantize to float, requantize to Q8_0.
  const size_t q8_row_bytes = row_bytes(ggml_type::q8_0, size_t(cols));
  auto storage = std::make_unique<uint8_t[]>(q8_row_bytes * size_t(rows));
  std::vector<float> row(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    dequantize_row(tensor.type, tensor.data + size_t(r) * matrix.row_bytes, row.data(), cols);
    kernels::quantize_row_q8_0(row.data(), storage.get() + size_t(r) * q8_row_bytes, cols);
  }
  matrix = {ggml_type::q8_0, storage.get(), rows, cols, q8_row_bytes};
  converted_bytes += q8_row_bytes * size_t(rows);
  owned_.push_back(std::move(storage));
  return matrix;
}

std::unique_ptr<cpu_weights> cpu_weights::load(const gguf::gguf_file& file, const model_config& config,
                                               void (*on_progress)(int, int, void*), void* progress_context) {
  auto weights = std::make_unique<cpu_weights>();
  const int64_t hidden = config.hidden_size, ffn = config.ffn_size;
  weights->token_embedding = weights->matrix(file, "token_embd.weight", config.vocab_size, hidden);
  weights->layers.resize(size_t(config.num_layers));
  for (int32_t layer = 0; layer < config.num_layers; ++layer) {
    const std::string prefix = "blk." + std::to_string(layer) + ".";
    auto& l = weights->layers[size_t(layer)];
    l.attn_norm = float_vector(file, prefix + "attn_norm.weight", hidden);
    l.attn_q = weights->matrix(file, prefix + "attn_q.weight", config.q_size(), hidden);
    l.attn_k = weights->matrix(file, prefix + "attn_k.weight", config.kv_size(), hidden);
    l.attn_v = weights->matrix(file, prefix + "attn_v.weight", config.kv_size(), hidden);
    l.attn_output = weights->matrix(file, prefix + "attn_output.weight", hidden, config.q_size());
    l.ffn_norm = float_vector(file, prefix + "ffn_norm.weight", hidden);
    l.ffn_gate = weights->matrix(file, prefix + "ffn_gate.weight", ffn, hidden);
    l.ffn_up = weights->matrix(file, prefix + "ffn_up.weight", ffn, hidden);
    l.ffn_down = weights->matrix(file, prefix + "ffn_down.weight", hidden, ffn);
    if (on_progress) on_progress(layer + 1, config.num_layers, progress_context);
  }
  weights->output_norm = float_vector(file, "output_norm.weight", hidden);
  weights->output = config.tied_embeddings ? weights->token_embedding
                                           : weights->matrix(file, "output.weight", config.vocab_size, hidden);
  if (file.find_tensor("rope_freqs.weight")) {
    weights->rope_freq_factors = float_vector(file, "rope_freqs.weight", config.rope_dims / 2);
  }
  return weights;
}

}  // namespace inflight
