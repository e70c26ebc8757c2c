// The settings of `inflight serve` and where they come from: built-in defaults, overridden by a config
// file (`--config-file=PATH`, CAF's INI format; config/inflight.ini lists every key), overridden by the
// command line (option_table.hpp). serve_config.cpp declares them; this header includes no CAF, so
// cli_serve.cpp compiles without it.
//
// With --node, serve runs as a gateway (inflight/cluster.hpp): the engine options belong to the nodes then,
// and giving one to the gateway is an error.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "cli_options.hpp"
#include "cli_settings.hpp"
#include "http_server.hpp"
#include "inflight/engine.hpp"

namespace inflight::cli {

// Every option of `inflight serve`. The defaults of the engine and HTTP server fields are those of
// engine_options and net::server_options themselves, so they cannot drift apart from the library's.
struct serve_settings {
  model_settings model;
  engine_options engine;
  net::server_options server;  // server.model_name: load_serve_settings derives it from the file name
  std::chrono::seconds shutdown_grace{10};  // on SIGINT/SIGTERM, running requests may finish for this long

  // Gateway: engine nodes to route to, and the port nodes may join on (0: none).
  std::vector<std::string> nodes;         // host:port
  std::vector<std::string> node_weights;  // host:port=weight
  std::string cluster_host = "127.0.0.1";
  uint16_t cluster_port = 0;
  bool prefix_affinity = true;
  std::chrono::milliseconds report_timeout{1000};
  link_settings link;

  bool dump_config = false;  // --dump-config: print these settings as a config file and exit, serve nothing
  bool gateway() const { return !nodes.empty() || cluster_port != 0; }
};

// Reads `inflight serve`'s options from argv (argv[0] is "serve") and from the config file it names.
// Throws usage_error naming the bad option, file or key: an unknown option or key, a section other than
// [global], a value of the wrong type or out of range, a key set twice, a file that cannot be read, an
// engine option given to a gateway. On success server.model_name is set (the model's file name without
// .gguf unless given; a gateway leaves it to the nodes). Does not look at --help.
serve_settings load_serve_settings(int argc, char** argv);

// The text `inflight serve --help` prints: every option, its INI key and its default.
std::string serve_help_text();

// `settings` as a config file that load_serve_settings reads back to the same settings (--dump-config).
std::string serve_settings_to_ini(const serve_settings& settings);

// The gateway's options from the settings (resolving the secret; a weight for a node that is not listed
// is a usage_error).
gateway_options gateway_options_of(const serve_settings& settings);

}  // namespace inflight::cli
