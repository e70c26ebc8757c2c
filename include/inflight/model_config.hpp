// Hyper-parameters of a Llama-architecture model, read from GGUF metadata (never hard-coded).
#pragma once

#include <cstdint>
#include <string>

namespace inflight {
namespace gguf { class gguf_file; }

struct model_config {
  std::string architecture;     // "llama"
  std::string name;             // general.name, for display
  int32_t num_layers = 0;
  int32_t hidden_size = 0;      // embedding_length
  int32_t ffn_size = 0;         // feed_forward_length
  int32_t num_heads = 0;
  int32_t num_kv_heads = 0;     // < num_heads: grouped-query attention
  int32_t head_dim = 0;         // key_length (== value_length)
  int32_t vocab_size = 0;
  int32_t context_length = 0;   // trained maximum
  int32_t rope_dims = 0;        // rotated dimensions per head (usually head_dim)
  float rope_freq_base = 10000.0f;
  float rope_freq_scale = 1.0f; // 1 / linear scaling factor
  float rms_norm_eps = 1e-5f;
  bool tied_embeddings = false; // no output.weight: the LM head reuses token_embd

  int32_t queries_per_kv() const { return num_heads / num_kv_heads; }
  int32_t q_size() const { return num_heads * head_dim; }
  int32_t kv_size() const { return num_kv_heads * head_dim; }

  // Throws gguf::gguf_error naming the missing key, the unsupported architecture or the inconsistent value.
  static model_config from_gguf(const gguf::gguf_file& file);
};

}  // namespace inflight
