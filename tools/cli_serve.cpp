// `inflight serve`: the OpenAI-compatible HTTP server over the engine, until SIGINT or SIGTERM. Its options
// (command line and config file) are read in serve_config.cpp.
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <exception>
#include <memory>
#include <string>
#include <string_view>

#include "backend_choice.hpp"
#include "cli_commands.hpp"
#include "cli_options.hpp"
#include "http_server.hpp"
#include "serve_config.hpp"
#include "inflight/chat_template.hpp"
#include "inflight/engine.hpp"
#include "inflight/gguf.hpp"
#include "inflight/tokenizer.hpp"

namespace inflight::cli {

namespace {

int serve(const serve_settings& settings) {
  // Block the shutdown signals before any thread starts, so every thread inherits the mask and sigwait
  // below is the one place they arrive.
  sigset_t shutdown_signals;
  sigemptyset(&shutdown_signals);
  sigaddset(&shutdown_signals, SIGINT);
  sigaddset(&shutdown_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &shutdown_signals, nullptr);

  auto file = gguf::gguf_file::open(settings.model);
  auto tok = tokenizer::from_gguf(*file);
  backend_choice choice;
  choice.device = resolve_device(settings.device);
  choice.threads = settings.threads;
  choice.kv_cache_mb = settings.kv_cache_mb;
  choice.gpu_memory_fraction = settings.gpu_memory_fraction;
  choice.cuda_graphs = settings.cuda_graphs;
  choice.block_size = settings.block_size;
  choice.max_step_sequences = settings.engine.max_num_seqs;
  // The step's token budget: the engine's, or by default 512 on the CPU (larger steps only add latency
  // there) and 2048 on a GPU (vLLM's default for chunked prefill).
  choice.max_step_tokens = settings.engine.max_num_batched_tokens > 0 ? settings.engine.max_num_batched_tokens
                           : choice.device == "cuda"                   ? 2048
                                                                       : 512;
  auto model = make_backend(file, choice);
  std::fprintf(stderr, "inflight serve: %s, %s\n", model->config().name.c_str(), model->describe().c_str());

  auto engine = inference_engine::create(std::move(model), tok, chat_template::from_gguf(*file), settings.engine);
  net::http_server server(*engine, tok, settings.server);
  server.start();
  std::fprintf(stderr, "inflight serve: model '%s' on http://%s:%u\n", settings.server.model_name.c_str(),
               settings.server.host.c_str(), unsigned(server.port()));

  int signal_number = 0;
  sigwait(&shutdown_signals, &signal_number);
  std::fprintf(stderr, "inflight serve: %s, stopping\n", signal_number == SIGINT ? "interrupted" : "terminated");
  server.stop(settings.shutdown_grace);
  return 0;
}

}  // namespace

int run_serve(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::string_view(argv[i]) == "--help" || std::string_view(argv[i]) == "-h") {
      std::fputs(serve_help_text().c_str(), stdout);
      return 0;
    }
  }
  try {
    const serve_settings settings = load_serve_settings(argc, argv);
    if (settings.dump_config) {
      std::fputs(serve_settings_to_ini(settings).c_str(), stdout);
      return 0;
    }
    return serve(settings);
  } catch (const usage_error& error) {
    std::fprintf(stderr, "inflight serve: %s\n(see inflight serve --help)\n", error.what());
    return 2;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "inflight serve: %s\n", error.what());
    return 1;
  }
}

}  // namespace inflight::cli
