// Settings that `inflight serve` and `inflight node` share: which model and backend, and how the links
// between a gateway and its nodes are secured. Plain structs (no CAF): shared_options.cpp declares them
// to each command's option table.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "inflight/cluster.hpp"

namespace inflight::cli {

struct model_settings {
  // GGUF model file. An empty value in a file or on the command line also means this default.
  std::string path = INFLIGHT_DEFAULT_MODEL;
  std::string device = "auto";       // auto | cpu | cuda (backend_choice.hpp)
  int threads = 0;                   // CPU: threads for the model; 0: one per hardware thread
  int64_t kv_cache_mb = 1024;        // CPU: KV cache memory
  double gpu_memory_fraction = 0.9;  // CUDA: share of device memory
  bool cuda_graphs = true;           // CUDA: decode steps as graphs
  int32_t block_size = 16;           // tokens per KV block
};

struct link_settings {
  std::string secret;       // --cluster-secret (visible in `ps`: prefer the file or the environment)
  std::string secret_file;  // --cluster-secret-file: its first line
  std::string tls_certificate, tls_key, tls_ca_file;
  std::chrono::milliseconds heartbeat{500}, link_timeout{3000};
};

// The secret from --cluster-secret, else from --cluster-secret-file, else from $INFLIGHT_CLUSTER_SECRET,
// and the rest as given. Throws usage_error for an unreadable or empty secret file, or bad link options.
cluster_link_options resolve_link(const link_settings& settings);

// "SmolLM2-135M-Instruct.Q4_1" from ".../SmolLM2-135M-Instruct.Q4_1.gguf".
std::string model_name_of(std::string_view path);

}  // namespace inflight::cli
