#include "bf16_weights.hpp"

#include <simdjson.h>

#include <cmath>
#include <random>
#include <stdexcept>

#include "inflight/gguf.hpp"
#include "inflight/half.hpp"
#include "inflight/quant.hpp"

namespace inflight::gpu {

namespace {

// Appends the dequantized, bf16-rounded rows of one GGUF matrix (rows x cols) to `out`.
void append_rows(const gguf::gguf_file& file, const std::string& name, int64_t rows, int64_t cols,
                 std::vector<uint16_t>& out) {
  const gguf::tensor_info& tensor = file.tensor(name);
  const uint64_t tensor_rows = tensor.dims.size() >= 2 ? tensor.rows() : 1;
  if (tensor.dims.empty() || int64_t(tensor.dims[0]) != cols || int64_t(tensor_rows) != rows) {
    throw gguf::gguf_error(file.path() + ": tensor '" + name + "' has an unexpected shape (expected " +
                           std::to_string(cols) + " x " + std::to_string(rows) + ")");
  }
  std::vector<float> row(static_cast<size_t>(cols));
  const size_t row_bytes = tensor.row_bytes();
  for (int64_t r = 0; r < rows; ++r) {
    dequantize_row(tensor.type, tensor.data + size_t(r) * row_bytes, row.data(), cols);
    for (const float value : row) out.push_back(fp32_to_bf16(value));
  }
}

// One fused (or plain) tensor from a list of GGUF matrices stacked by rows.
bf16_tensor stacked(const gguf::gguf_file& file, std::string name, int64_t cols,
                    std::initializer_list<std::pair<std::string, int64_t>> parts) {
  bf16_tensor tensor{std::move(name), 0, cols, {}};
  for (const auto& [part, rows] : parts) tensor.rows += rows;
  tensor.values.reserve(size_t(tensor.rows) * size_t(cols));
  for (const auto& [part, rows] : parts) append_rows(file, part, rows, cols, tensor.values);
  return tensor;
}

// The visiting order and shapes of the header, shared by the GGUF and dummy sources.
template <class MakeTensor>
void visit_all(const model_config& c, MakeTensor make, const bf16_tensor_visitor& visit) {
  const int64_t hidden = c.hidden_size, ffn = c.ffn_size, q = c.q_size(), kv = c.kv_size();
  visit(make("token_embd", c.vocab_size, hidden, std::initializer_list<std::pair<std::string, int64_t>>{{"token_embd.weight", c.vocab_size}}, false));
  for (int32_t layer = 0; layer < c.num_layers; ++layer) {
    const std::string p = "blk." + std::to_string(layer) + ".";
    visit(make(p + "attn_norm", 1, hidden, {{p + "attn_norm.weight", 1}}, true));
    visit(make(p + "attn_qkv", q + 2 * kv, hidden, {{p + "attn_q.weight", q}, {p + "attn_k.weight", kv}, {p + "attn_v.weight", kv}}, false));
    visit(make(p + "attn_output", hidden, q, {{p + "attn_output.weight", hidden}}, false));
    visit(make(p + "ffn_norm", 1, hidden, {{p + "ffn_norm.weight", 1}}, true));
    visit(make(p + "ffn_gate_up", 2 * ffn, hidden, {{p + "ffn_gate.weight", ffn}, {p + "ffn_up.weight", ffn}}, false));
    visit(make(p + "ffn_down", hidden, ffn, {{p + "ffn_down.weight", hidden}}, false));
  }
  visit(make("output_norm", 1, hidden, {{"output_norm.weight", 1}}, true));
  if (!c.tied_embeddings) visit(make("output", c.vocab_size, hidden, {{"output.weight", c.vocab_size}}, false));
}

}  // namespace

void for_each_bf16_weight(const gguf::gguf_file& file, const model_config& config, const bf16_tensor_visitor& visit) {
  visit_all(config,
            [&](std::string name, int64_t, int64_t cols, std::initializer_list<std::pair<std::string, int64_t>> parts,
                bool) { return stacked(file, std::move(name), cols, parts); },
            visit);
}

void for_each_dummy_weight(const model_config& config, uint64_t seed, const bf16_tensor_visitor& visit) {
  std::mt19937_64 rng(seed);
  // Uniform on [-a, a] has standard deviation a / sqrt(3): a = 0.02 * sqrt(3) matches HF's normal(0, 0.02).
  const float bound = 0.02f * std::sqrt(3.0f);
  visit_all(config,
            [&](std::string name, int64_t rows, int64_t cols, std::initializer_list<std::pair<std::string, int64_t>>,
                bool is_norm) {
              bf16_tensor tensor{std::move(name), rows, cols, std::vector<uint16_t>(size_t(rows) * size_t(cols))};
              if (is_norm) {
                std::fill(tensor.values.begin(), tensor.values.end(), fp32_to_bf16(1.0f));
              } else {
                std::uniform_real_distribution<float> weight(-bound, bound);
                for (uint16_t& value : tensor.values) value = fp32_to_bf16(weight(rng));
              }
              return tensor;
            },
            visit);
}

model_config model_config_from_hf_json(const std::string& path) {
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  if (const auto error = parser.load(path).get(root))
    throw std::runtime_error(path + ": cannot read a JSON config (" + simdjson::error_message(error) + ")");
  auto integer = [&](const char* key) -> int32_t {
    int64_t value = 0;
    if (root[key].get_int64().get(value) != simdjson::SUCCESS || value <= 0 || value > (int64_t(1) << 31) - 1)
      throw std::runtime_error(path + ": '" + key + "' must be a positive integer");
    return int32_t(value);
  };
  auto real = [&](const char* key, double fallback) -> double {
    double value = 0;
    if (root[key].error() == simdjson::NO_SUCH_FIELD) return fallback;
    if (root[key].get_double().get(value) != simdjson::SUCCESS)
      throw std::runtime_error(path + ": '" + key + "' must be a number");
    return value;
  };
  model_config c;
  c.architecture = "llama";
  c.name = path;
  c.hidden_size = integer("hidden_size");
  c.ffn_size = integer("intermediate_size");
  c.num_layers = integer("num_hidden_layers");
  c.num_heads = integer("num_attention_heads");
  c.num_kv_heads = integer("num_key_value_heads");
  c.vocab_size = integer("vocab_size");
  c.context_length = integer("max_position_embeddings");
  c.head_dim = root["head_dim"].error() == simdjson::NO_SUCH_FIELD ? c.hidden_size / c.num_heads : integer("head_dim");
  c.rope_dims = c.head_dim;
  c.rope_freq_base = float(real("rope_theta", 10000.0));
  c.rms_norm_eps = float(real("rms_norm_eps", 1e-5));
  bool tied = false;
  if (root["tie_word_embeddings"].error() != simdjson::NO_SUCH_FIELD && root["tie_word_embeddings"].get_bool().get(tied))
    throw std::runtime_error(path + ": 'tie_word_embeddings' must be true or false");
  c.tied_embeddings = tied;
  if (c.num_heads % c.num_kv_heads != 0)
    throw std::runtime_error(path + ": num_attention_heads must be a multiple of num_key_value_heads");
  return c;
}

std::vector<float> rope_inverse_frequencies(const model_config& config, const std::vector<float>& freq_factors) {
  const int32_t pairs = config.rope_dims / 2;
  if (!freq_factors.empty() && int32_t(freq_factors.size()) != pairs)
    throw std::invalid_argument("rope frequency factors: " + std::to_string(freq_factors.size()) + " values for " +
                                std::to_string(pairs) + " pairs");
  // The CPU backend's rope_angles: theta_i = base^(-2i / rope_dims), angle = scale * position * theta_i / factor_i.
  const float theta_scale = std::pow(config.rope_freq_base, -2.0f / float(config.rope_dims));
  std::vector<float> inverse(static_cast<size_t>(pairs));
  float theta = 1.0f;
  for (int32_t i = 0; i < pairs; ++i) {
    const float factor = freq_factors.empty() ? 1.0f : freq_factors[size_t(i)];
    inverse[size_t(i)] = config.rope_freq_scale * theta / factor;
    theta *= theta_scale;
  }
  return inverse;
}

}  // namespace inflight::gpu
