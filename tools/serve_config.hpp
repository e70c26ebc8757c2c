// The settings of `inflight serve` and where they come from: built-in defaults, overridden by a config
// file (`--config-file=PATH`, CAF's INI format; config/inflight.ini lists every key), overridden by the
// command line. serve_config.cpp reads both through CAF's configuration system; this header includes no
// CAF, so cli_serve.cpp compiles without it.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "cli_options.hpp"
#include "http_server.hpp"
#include "inflight/engine.hpp"

namespace inflight::cli {

// Every option of `inflight serve`. The defaults of the engine and HTTP server fields are those of
// engine_options and net::server_options themselves, so they cannot drift apart from the library's.
struct serve_settings {
  // GGUF model file. An empty value in a file or on the command line also means this default.
  std::string model = INFLIGHT_DEFAULT_MODEL;
  std::string device = "auto";       // auto | cpu | cuda (backend_choice.hpp)
  int threads = 0;                   // CPU: threads for the model; 0: one per hardware thread
  int64_t kv_cache_mb = 1024;        // CPU: KV cache memory
  double gpu_memory_fraction = 0.9;  // CUDA: share of device memory
  bool cuda_graphs = true;           // CUDA: decode steps as graphs
  int32_t block_size = 16;           // tokens per KV block
  engine_options engine;
  // server.model_name is left empty here: load_serve_settings then derives it from the model's file name.
  net::server_options server = [] {
    net::server_options options;
    options.model_name.clear();
    return options;
  }();
  std::chrono::seconds shutdown_grace{10};  // on SIGINT/SIGTERM, running requests may finish for this long

  bool dump_config = false;  // --dump-config: print these settings as a config file and exit, serve nothing
};

// Reads `inflight serve`'s options from argv (argv[0] is "serve") and from the config file it names.
// Throws usage_error naming the bad option, file or key: an unknown option or key, a section other than
// [global], a value of the wrong type or out of range, a key set twice, a file that cannot be read.
// On success server.model_name is set (the model's file name without .gguf unless given).
// Does not look at --help; cli_serve.cpp answers that before calling.
serve_settings load_serve_settings(int argc, char** argv);

// The text `inflight serve --help` prints: every option, its INI key and its default.
std::string serve_help_text();

// `settings` as a config file that load_serve_settings reads back to the same settings (--dump-config).
std::string serve_settings_to_ini(const serve_settings& settings);

}  // namespace inflight::cli
