#include "inflight/model_config.hpp"

#include <cmath>
#include <string>

#include "inflight/gguf.hpp"

namespace inflight {

namespace {

int32_t positive_int(const gguf::gguf_file& file, const std::string& key) {
  const uint64_t value = file.get_uint(key);
  if (value == 0 || value > (1u << 30)) {
    throw gguf::gguf_error(file.path() + ": metadata key '" + key + "' has implausible value " + std::to_string(value));
  }
  return int32_t(value);
}

}  // namespace

model_config model_config::from_gguf(const gguf::gguf_file& file) {
  model_config config;
  config.architecture = file.get_string("general.architecture");
  // Mistral-style and Llama-3 GGUFs are written with architecture "llama" too; other families differ in
  // tensors or norms and are refused rather than run wrongly.
  if (config.architecture != "llama") {
    throw gguf::gguf_error(file.path() + ": unsupported architecture '" + config.architecture +
                           "' (supported: llama)");
  }
  const std::string arch = config.architecture + ".";
  config.name = file.find_string("general.name").value_or("");
  config.num_layers = positive_int(file, arch + "block_count");
  config.hidden_size = positive_int(file, arch + "embedding_length");
  config.ffn_size = positive_int(file, arch + "feed_forward_length");
  config.num_heads = positive_int(file, arch + "attention.head_count");
  config.num_kv_heads = file.find_uint(arch + "attention.head_count_kv")
                            ? positive_int(file, arch + "attention.head_count_kv")
                            : config.num_heads;
  config.context_length = positive_int(file, arch + "context_length");
  config.head_dim = file.find_uint(arch + "attention.key_length")
                        ? positive_int(file, arch + "attention.key_length")
                        : config.hidden_size / config.num_heads;
  if (auto value_length = file.find_uint(arch + "attention.value_length");
      value_length && int32_t(*value_length) != config.head_dim) {
    throw gguf::gguf_error(file.path() + ": key_length != value_length is not supported");
  }
  config.rope_dims = file.find_uint(arch + "rope.dimension_count")
                         ? positive_int(file, arch + "rope.dimension_count")
                         : config.head_dim;
  config.rope_freq_base = float(file.find_float(arch + "rope.freq_base").value_or(10000.0));
  config.rms_norm_eps = float(file.get_float(arch + "attention.layer_norm_rms_epsilon"));
  if (auto type = file.find_string(arch + "rope.scaling.type"); type && *type != "none") {
    if (*type != "linear") {
      throw gguf::gguf_error(file.path() + ": unsupported rope scaling type '" + *type + "' (supported: none, linear)");
    }
    config.rope_freq_scale = float(1.0 / file.get_float(arch + "rope.scaling.factor"));
  }
  config.tied_embeddings = file.find_tensor("output.weight") == nullptr;

  const auto& embeddings = file.tensor("token_embd.weight");
  config.vocab_size = file.find_uint(arch + "vocab_size") ? positive_int(file, arch + "vocab_size")
                                                          : int32_t(embeddings.dims.at(1));

  auto fail = [&](const std::string& what) { throw gguf::gguf_error(file.path() + ": " + what); };
  // NaN or non-positive values would turn every activation into NaN (and the int8 quantization of a NaN
  // is undefined behaviour): refuse the file instead.
  if (!(config.rms_norm_eps > 0.0f) || !std::isfinite(config.rms_norm_eps)) fail("attention.layer_norm_rms_epsilon must be > 0");
  if (!(config.rope_freq_base > 0.0f) || !std::isfinite(config.rope_freq_base)) fail("rope.freq_base must be > 0");
  if (!(config.rope_freq_scale > 0.0f) || !std::isfinite(config.rope_freq_scale)) fail("rope.scaling.factor must be > 0");
  if (config.num_heads % config.num_kv_heads != 0) fail("head_count is not a multiple of head_count_kv");
  if (config.rope_dims > config.head_dim || config.rope_dims % 2 != 0) fail("bad rope.dimension_count");
  if (config.head_dim % 2 != 0) fail("head dimension must be even");
  if (embeddings.dims.size() != 2 || int32_t(embeddings.dims[0]) != config.hidden_size ||
      int32_t(embeddings.dims[1]) != config.vocab_size) {
    fail("token_embd.weight shape does not match embedding_length x vocab_size");
  }
  return config;
}

}  // namespace inflight
