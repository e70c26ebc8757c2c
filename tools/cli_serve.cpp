// `inflight serve`: the OpenAI-compatible HTTP server over the engine, until SIGINT or SIGTERM. The engine
// runs in this process, or (with --node) on engine nodes behind this gateway. Its options (command line
// and config file) are read in serve_config.cpp.
#include <signal.h>
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <exception>
#include <memory>
#include <string>
#include <string_view>

#include "backend_choice.hpp"
#include "load_progress.hpp"
#include "cli_commands.hpp"
#include "cli_options.hpp"
#include "http_server.hpp"
#include "serve_config.hpp"
#include "shared_options.hpp"
#include "inflight/chat_template.hpp"
#include "inflight/cluster.hpp"
#include "inflight/engine.hpp"
#include "inflight/gguf.hpp"
#include "inflight/tokenizer.hpp"

namespace inflight::cli {

namespace {

// The engine in this process: the model loaded onto the chosen backend.
std::unique_ptr<inference_engine> local_engine(const serve_settings& settings) {
  auto file = gguf::gguf_file::open(settings.model.path);
  auto tok = tokenizer::from_gguf(*file);
  auto model = load_backend("inflight serve", file, settings.model.path, backend_choice_of(settings.model, settings.engine));
  std::fprintf(stderr, "inflight serve: %s, %s\n", model->config().name.c_str(), model->describe().c_str());
  engine_options engine = settings.engine;
  engine.model_name = settings.server.model_name;
  return inference_engine::create(std::move(model), tok, chat_template::from_gguf(*file), engine);
}

// Each connection is a file descriptor: the soft open-file limit (often 1024) is raised to the hard one,
// as servers do, and a --max-connections the limit cannot hold is said at start, not found under load.
void fit_open_file_limit(int32_t max_connections) {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return;
  if (limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
    getrlimit(RLIMIT_NOFILE, &limit);
  }
  constexpr rlim_t reserve = 256;  // model file, engine threads, cluster links, logs
  if (limit.rlim_cur != RLIM_INFINITY && rlim_t(max_connections) + reserve > limit.rlim_cur)
    std::fprintf(stderr,
                 "inflight serve: warning: --max-connections %d does not fit the open-file limit %llu (each "
                 "connection is a file); connections beyond what it holds wait in the listen queue\n",
                 max_connections, static_cast<unsigned long long>(limit.rlim_cur));
}

int serve(const serve_settings& settings) {
  // Block the shutdown signals before any thread starts, so every thread inherits the mask and sigwait
  // below is the one place they arrive.
  sigset_t shutdown_signals;
  sigemptyset(&shutdown_signals);
  sigaddset(&shutdown_signals, SIGINT);
  sigaddset(&shutdown_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &shutdown_signals, nullptr);

  std::unique_ptr<inference_engine> engine;
  if (settings.gateway()) {
    const gateway_options options = gateway_options_of(settings);
    engine = make_gateway(options);
    std::string nodes;
    for (const gateway_node& node : options.nodes) nodes += (nodes.empty() ? "" : ", ") + node.address;
    std::fprintf(stderr, "inflight serve: gateway to %s%s%s\n", nodes.empty() ? "no listed node" : nodes.c_str(),
                 options.accept_joins ? "; nodes may join on " : "",
                 options.accept_joins
                     ? (options.join_host + ":" + std::to_string(gateway_cluster_port(*engine))).c_str()
                     : "");
  } else {
    engine = local_engine(settings);
  }
  fit_open_file_limit(settings.server.max_connections);
  net::http_server server(*engine, settings.server);
  server.start();
  const auto model = engine->model();
  std::fprintf(stderr, "inflight serve: %s on http://%s:%u\n",
               model ? ("model '" + (settings.server.model_name.empty() ? model->name : settings.server.model_name) + "'").c_str()
                     : "a gateway (the model comes with the first node up)",
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
  } catch (const std::invalid_argument& error) {
    std::fprintf(stderr, "inflight serve: %s\n", error.what());
    return 2;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "inflight serve: %s\n", error.what());
    return 1;
  }
}

}  // namespace inflight::cli
