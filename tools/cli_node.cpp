// `inflight node`: an engine node (inflight/cluster.hpp) until SIGINT or SIGTERM, which drain it: no new
// requests, the running ones finish for up to --shutdown-grace-s. Should the engine fail, the node exits
// with code 1 at once, closing its links, so that gateways fail over (run it under a supervisor that
// restarts it).
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <exception>
#include <memory>
#include <string>
#include <string_view>

#include "backend_choice.hpp"
#include "load_progress.hpp"
#include "cli_commands.hpp"
#include "cli_options.hpp"
#include "node_config.hpp"
#include "shared_options.hpp"
#include "inflight/chat_template.hpp"
#include "inflight/cluster.hpp"
#include "inflight/gguf.hpp"
#include "inflight/tokenizer.hpp"

namespace inflight::cli {

namespace {

void log_line(const std::string& line) { std::fprintf(stderr, "inflight node: %s\n", line.c_str()); }

int run(const node_settings& settings) {
  // SIGUSR1 is the engine's failure (on_failure below), delivered to the same sigwait.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  node_options options;
  options.host = settings.host;
  options.port = settings.port;
  options.name = settings.name;
  options.join = settings.join;
  options.link = resolve_link(settings.link);
  options.report_interval = settings.report_interval;
  options.log = log_line;
  options.on_failure = [](const std::string&) { ::kill(::getpid(), SIGUSR1); };
  if (options.link.secret.empty() && settings.host != "127.0.0.1" && settings.host != "::1" && settings.host != "localhost")
    log_line("warning: listening on " + settings.host + " without a cluster secret: anyone who can reach the port can use this node");

  auto file = gguf::gguf_file::open(settings.model.path);
  auto tok = tokenizer::from_gguf(*file);
  options.card = describe_model(*file);
  auto model = load_backend("inflight node", file, settings.model.path, backend_choice_of(settings.model, settings.engine));
  log_line(model->config().name + ", " + model->describe());
  engine_options engine = settings.engine;
  engine.model_name = settings.model_name;
  auto node = engine_node::create(std::move(model), tok, chat_template::from_gguf(*file), engine, options);
  // Tests and scripts wait for this line.
  log_line("ready: model '" + settings.model_name + "' as " + node->name() + " on " + settings.host + ":" +
           std::to_string(node->port()) + (options.link.tls() ? " (TLS)" : ""));

  int signal_number = 0;
  sigwait(&signals, &signal_number);
  if (signal_number == SIGUSR1) {
    log_line("exiting: the engine failed");
    std::fflush(stderr);
    // No drain: the engine cannot finish anything. Quit without waiting for actors that may never stop.
    std::_Exit(1);
  }
  log_line(std::string(signal_number == SIGINT ? "interrupted" : "terminated") + ": draining for up to " +
           std::to_string(settings.shutdown_grace.count()) + " s");
  node->drain(settings.shutdown_grace);
  log_line("drained, stopping");
  return 0;
}

}  // namespace

int run_node(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::string_view(argv[i]) == "--help" || std::string_view(argv[i]) == "-h") {
      std::fputs(node_help_text().c_str(), stdout);
      return 0;
    }
  }
  try {
    const node_settings settings = load_node_settings(argc, argv);
    if (settings.dump_config) {
      std::fputs(node_settings_to_ini(settings).c_str(), stdout);
      return 0;
    }
    return run(settings);
  } catch (const usage_error& error) {
    std::fprintf(stderr, "inflight node: %s\n(see inflight node --help)\n", error.what());
    return 2;
  } catch (const std::invalid_argument& error) {
    std::fprintf(stderr, "inflight node: %s\n", error.what());
    return 2;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "inflight node: %s\n", error.what());
    return 1;
  }
}

}  // namespace inflight::cli
