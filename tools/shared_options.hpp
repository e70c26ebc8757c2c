// Option declarations that `inflight serve` and `inflight node` share, for their option tables (CAF).
#pragma once

#include "backend_choice.hpp"
#include "cli_settings.hpp"
#include "inflight/engine.hpp"
#include "option_table.hpp"

namespace inflight::cli {

// "The model": --model, --model-name, --device, --threads, --kv-cache-mb, --gpu-memory-fraction,
// --[no-]cuda-graphs, --block-size.
void declare_model_options(option_table& table, model_settings& model, std::string& model_name);
// "Scheduling": --max-num-seqs ... --actor-threads.
void declare_scheduling_options(option_table& table, engine_options& engine);
// "Cluster links": --cluster-secret, --cluster-secret-file, --tls-certificate, --tls-key, --tls-ca,
// --heartbeat-ms, --link-timeout-ms.
void declare_link_options(option_table& table, link_settings& link);

// The backend that --device and the model options ask for, with the engine's step limits (resolves "auto").
backend_choice backend_choice_of(const model_settings& model, const engine_options& engine);

}  // namespace inflight::cli
