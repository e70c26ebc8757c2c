#include "shared_options.hpp"

#include <cstdlib>
#include <fstream>

namespace inflight::cli {

backend_choice backend_choice_of(const model_settings& model, const engine_options& engine) {
  backend_choice choice;
  choice.device = resolve_device(model.device);
  choice.threads = model.threads;
  choice.kv_cache_mb = model.kv_cache_mb;
  choice.gpu_memory_fraction = model.gpu_memory_fraction;
  choice.cuda_graphs = model.cuda_graphs;
  choice.block_size = model.block_size;
  choice.max_step_sequences = engine.max_num_seqs;
  // The step's token budget: the engine's, or by default 512 on the CPU (larger steps only add latency
  // there) and 2048 on a GPU (vLLM's default for chunked prefill).
  choice.max_step_tokens = engine.max_num_batched_tokens > 0 ? engine.max_num_batched_tokens
                           : choice.device == "cuda"          ? 2048
                                                              : 512;
  return choice;
}

void declare_model_options(option_table& t, model_settings& s, std::string& model_name) {
  t.group("The model");
  t.text("model", "PATH", "GGUF model file; \"\" means the model tools/setup.sh fetches", s.path, true);
  t.text("model-name", "NAME", "the name clients put in \"model\"; \"\" means the model file's name without .gguf",
         model_name, true);
  t.choice("device", "DEVICE", "auto (cuda when this build has it and a GPU is present, else cpu), cpu or cuda",
           {"auto", "cpu", "cuda"}, [&s] { return s.device; }, [&s](const std::string& d) { s.device = d; });
  t.integer("threads", "CPU backend: threads for the model; 0 means one per hardware thread", 0, 1024, s.threads);
  t.integer("kv-cache-mb", "CPU backend: KV cache memory in MiB", 1, 1 << 20, s.kv_cache_mb);
  t.real("gpu-memory-fraction", "CUDA backend: share of GPU memory for weights, activations and the KV cache", 0.0,
         1.0, s.gpu_memory_fraction);
  t.flag("cuda-graphs", "CUDA backend: run decode steps as CUDA graphs", s.cuda_graphs);
  t.integer("block-size", "tokens per KV-cache block", 1, 1024, s.block_size);
}

void declare_scheduling_options(option_table& t, engine_options& e) {
  t.group("Scheduling");
  t.integer("max-num-seqs", "sequences running together at most (the batch size)", 1, 4096, e.max_num_seqs);
  t.integer("max-num-batched-tokens",
            "tokens computed in one step at most; 0 means the backend's limit (512 on the CPU), which also caps it",
            0, 1 << 20, e.max_num_batched_tokens);
  t.integer("max-waiting", "waiting requests at most; beyond, requests are refused with 429", 0, 1 << 20,
            e.max_waiting);
  t.choice("batching", "MODE", "continuous, or static: the baseline where a batch runs until its longest request finishes",
           {"continuous", "static"}, [&e] { return std::string(e.static_batching ? "static" : "continuous"); },
           [&e](const std::string& mode) { e.static_batching = mode == "static"; });
  t.duration("static-batch-window-ms",
             "static batching only: a batch also starts when its oldest request has waited this long", 0, 60000,
             e.static_batch_window);
  t.flag("prefix-caching", "reuse the KV blocks of a prompt prefix computed before", e.prefix_caching);
  t.flag("pipelining", "plan the next step while one runs (off: one step in flight, for comparison)", e.pipelining);
  t.integer("actor-threads", "CAF worker threads for the request, scheduler and KV-manager actors", 1, 64,
            e.actor_threads);
}

void declare_link_options(option_table& t, link_settings& s) {
  t.group("Cluster links (gateway and nodes alike)");
  t.text("cluster-secret", "SECRET",
         "shared secret of the gateway and its nodes (HMAC challenge-response; it never crosses the wire); \"\": "
         "--cluster-secret-file, else $INFLIGHT_CLUSTER_SECRET, else none. A command line shows in `ps`: prefer those",
         s.secret, true);
  t.text("cluster-secret-file", "PATH", "a file whose first line is the cluster secret", s.secret_file, true);
  t.text("tls-certificate", "PATH",
         "TLS between gateway and nodes (CAF's OpenSSL module): this side's certificate (PEM); with --tls-key and "
         "--tls-ca, mutual: each side must present a certificate the other's CA file verifies",
         s.tls_certificate, true);
  t.text("tls-key", "PATH", "TLS: the certificate's private key (PEM)", s.tls_key, true);
  t.text("tls-ca", "PATH", "TLS: the CA certificates that the other side's certificate must chain to (PEM)",
         s.tls_ca_file, true);
  t.duration("heartbeat-ms", "CAF heartbeat on every cluster link", 10, 600000, s.heartbeat);
  t.duration("link-timeout-ms",
             "a link silent for this long is declared dead (a hung peer, a half-open connection); at least twice "
             "the heartbeat; the same on every node and gateway",
             20, 3600000, s.link_timeout);
}

cluster_link_options resolve_link(const link_settings& s) {
  cluster_link_options link;
  link.secret = s.secret;
  if (link.secret.empty() && !s.secret_file.empty()) {
    std::ifstream file(s.secret_file);
    if (!file) throw usage_error("--cluster-secret-file: cannot read " + s.secret_file);
    std::getline(file, link.secret);
    if (!link.secret.empty() && link.secret.back() == '\r') link.secret.pop_back();
    if (link.secret.empty()) throw usage_error("--cluster-secret-file: " + s.secret_file + " has an empty first line");
  }
  if (link.secret.empty()) {
    if (const char* from_environment = std::getenv("INFLIGHT_CLUSTER_SECRET")) link.secret = from_environment;
  }
  link.tls_certificate = s.tls_certificate;
  link.tls_key = s.tls_key;
  link.tls_ca_file = s.tls_ca_file;
  link.heartbeat = s.heartbeat;
  link.link_timeout = s.link_timeout;
  if (const std::string problem = check_cluster_link_options(link); !problem.empty()) throw usage_error(problem);
  return link;
}

std::string model_name_of(std::string_view path) {
  if (const size_t slash = path.find_last_of('/'); slash != std::string_view::npos) path.remove_prefix(slash + 1);
  if (path.ends_with(".gguf")) path.remove_suffix(5);
  return std::string(path);
}

}  // namespace inflight::cli
