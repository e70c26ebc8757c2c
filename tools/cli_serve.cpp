// `inflight serve`: the OpenAI-compatible HTTP server over the engine, until SIGINT or SIGTERM.
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <exception>
#include <memory>
#include <string>
#include <string_view>

#include "cli_commands.hpp"
#include "cli_options.hpp"
#include "http_server.hpp"
#include "inflight/chat_template.hpp"
#include "inflight/cpu_backend.hpp"
#include "inflight/engine.hpp"
#include "inflight/gguf.hpp"
#include "inflight/tokenizer.hpp"

namespace inflight::cli {

namespace {

constexpr const char* serve_help = R"(usage: inflight serve [options]

Serves the model over HTTP with an OpenAI-compatible API until interrupted (Ctrl-C or SIGTERM):
POST /v1/completions, POST /v1/chat/completions (both with "stream": true for server-sent events),
GET /v1/models, GET /health, GET /ready, POST /tokenize, POST /detokenize.

  --model PATH          GGUF model (default: the model fetched by tools/setup.sh)
  --model-name NAME     the name clients use in "model" (default: the file name without .gguf)
  --host ADDRESS        listen address (default 127.0.0.1; 0.0.0.0 for every interface)
  --port N              listen port (default 8000; 0 picks a free one)
  --max-num-seqs N      sequences running together at most (default 64)
  --max-waiting N       waiting requests at most; beyond, 429 (default 1024)
  --threads N           CPU threads for the model (default: all cores)
  --kv-cache-mb N       KV cache memory (default 1024)
  --api-key KEY         require "Authorization: Bearer KEY" (may be repeated; /health, /ready and the
                        page stay open; the page's WebSocket may pass ?api_key=KEY)
  --shutdown-grace-s N  on SIGINT/SIGTERM, let running requests finish for up to N seconds, then
                        cancel the rest (default 10)
)";

struct serve_options {
  std::string model = INFLIGHT_DEFAULT_MODEL;
  net::server_options server;
  bool model_name_given = false;
  int32_t max_num_seqs = 64, max_waiting = 1024;
  int threads = 0;
  int64_t kv_cache_mb = 1024;
  std::chrono::milliseconds shutdown_grace{10000};
};

serve_options parse(int argc, char** argv) {
  serve_options options;
  option_reader reader(argc, argv);
  while (!reader.done()) {
    const std::string name = reader.next_name();
    if (name == "model") options.model = reader.string_value();
    else if (name == "model-name") { options.server.model_name = reader.string_value(); options.model_name_given = true; }
    else if (name == "host") options.server.host = reader.string_value();
    else if (name == "port") options.server.port = uint16_t(reader.int_value(0, 65535));
    else if (name == "max-num-seqs") options.max_num_seqs = int32_t(reader.int_value(1, 4096));
    else if (name == "max-waiting") options.max_waiting = int32_t(reader.int_value(0, 1 << 20));
    else if (name == "threads") options.threads = int(reader.int_value(1, 1024));
    else if (name == "kv-cache-mb") options.kv_cache_mb = reader.int_value(1, 1 << 20);
    else if (name == "api-key") options.server.api_keys.push_back(reader.string_value());
    else if (name == "shutdown-grace-s") options.shutdown_grace = std::chrono::milliseconds(1000 * reader.int_value(0, 3600));
    else throw usage_error("unknown option --" + name);
  }
  if (!options.model_name_given) {
    std::string_view file = options.model;
    file = file.substr(file.find_last_of('/') == std::string_view::npos ? 0 : file.find_last_of('/') + 1);
    if (file.ends_with(".gguf")) file.remove_suffix(5);
    options.server.model_name = std::string(file);
  }
  return options;
}

int serve(const serve_options& options) {
  // Block the shutdown signals before any thread starts, so every thread inherits the mask and sigwait
  // below is the one place they arrive.
  sigset_t shutdown_signals;
  sigemptyset(&shutdown_signals);
  sigaddset(&shutdown_signals, SIGINT);
  sigaddset(&shutdown_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &shutdown_signals, nullptr);

  auto file = gguf::gguf_file::open(options.model);
  auto tok = tokenizer::from_gguf(*file);
  cpu_backend_options backend_options;
  backend_options.num_threads = options.threads;
  backend_options.max_step_sequences = options.max_num_seqs;
  backend_options.kv_cache_bytes = size_t(options.kv_cache_mb) << 20;
  auto model = std::make_unique<cpu_backend>(file, backend_options);
  std::fprintf(stderr, "inflight serve: %s, %s\n", model->config().name.c_str(), model->describe().c_str());

  engine_options engine_config;
  engine_config.max_num_seqs = options.max_num_seqs;
  engine_config.max_waiting = options.max_waiting;
  auto engine = inference_engine::create(std::move(model), tok, chat_template::from_gguf(*file), engine_config);
  net::http_server server(*engine, tok, options.server);
  server.start();
  std::fprintf(stderr, "inflight serve: model '%s' on http://%s:%u\n", options.server.model_name.c_str(),
               options.server.host.c_str(), unsigned(server.port()));

  int signal_number = 0;
  sigwait(&shutdown_signals, &signal_number);
  std::fprintf(stderr, "inflight serve: %s, stopping\n", signal_number == SIGINT ? "interrupted" : "terminated");
  server.stop(options.shutdown_grace);
  return 0;
}

}  // namespace

int run_serve(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::string_view(argv[i]) == "--help" || std::string_view(argv[i]) == "-h") {
      std::fputs(serve_help, stdout);
      return 0;
    }
  }
  try {
    return serve(parse(argc, argv));
  } catch (const usage_error& error) {
    std::fprintf(stderr, "inflight serve: %s\n(see inflight serve --help)\n", error.what());
    return 2;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "inflight serve: %s\n", error.what());
    return 1;
  }
}

}  // namespace inflight::cli
