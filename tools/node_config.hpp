// The settings of `inflight node`: an engine node for gateways (inflight serve --node) to route to. Read
// like serve's (option_table.hpp: command line over config file over defaults; config/inflight-node.ini
// lists every key). This header includes no CAF.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "cli_options.hpp"
#include "cli_settings.hpp"
#include "inflight/engine.hpp"

namespace inflight::cli {

struct node_settings {
  model_settings model;
  std::string model_name;  // "" -> the model file's name without .gguf
  engine_options engine;
  std::string host = "127.0.0.1";
  uint16_t port = 9100;
  std::string name;               // "" -> host:port
  std::vector<std::string> join;  // gateways' cluster ports (host:port)
  std::chrono::milliseconds report_interval{100};
  std::chrono::seconds shutdown_grace{10};
  link_settings link;
  bool dump_config = false;
};

node_settings load_node_settings(int argc, char** argv);  // argv[0] is "node"; throws usage_error
std::string node_help_text();
std::string node_settings_to_ini(const node_settings& settings);

}  // namespace inflight::cli
