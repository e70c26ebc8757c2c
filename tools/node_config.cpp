// `inflight node`'s option table (option_table.hpp does the reading and checking).
#include "node_config.hpp"

#include "shared_options.hpp"

namespace inflight::cli {

namespace {

class node_config : public option_table {
 public:
  explicit node_config(node_settings& s) : option_table("node") {
    declare_model_options(*this, s.model, s.model_name);
    declare_scheduling_options(*this, s.engine);
    group("Node");
    text("host", "ADDRESS",
         "listen address for gateways; 0.0.0.0 for every interface (then give it a --cluster-secret, and TLS "
         "on an untrusted network)",
         s.host, false);
    integer("port", "listen port for gateways; 0 picks a free one", 0, 65535, s.port);
    text("name", "NAME", "how gateways list this node; \"\" means HOST:PORT", s.name, true);
    list("join", "HOST:PORT",
         "join the gateway whose cluster port this is (inflight serve --cluster-port), and again whenever the "
         "link is lost (a restarted gateway); repeat it for several gateways",
         s.join);
    duration("report-interval-ms", "how often the node sends its load to the gateways (their heartbeat of it)", 10,
             60000, s.report_interval);
    duration("shutdown-grace-s",
             "on SIGINT/SIGTERM, leave the cluster: take no new requests, let running ones finish for up to this "
             "many seconds, then cancel the rest",
             0, 3600, s.shutdown_grace);
    declare_link_options(*this, s.link);
  }
};

constexpr const char* help_intro = R"(usage: inflight node [--config-file=PATH] [options]

Runs an engine node: the model, its scheduler, KV cache and executor, published with CAF's middleman for
gateways (inflight serve --node HOST:PORT) to route requests to, until interrupted (Ctrl-C or SIGTERM:
it then drains, see --shutdown-grace-s). Only token ids and sampling parameters cross the link; the
gateway tokenizes and streams. With --join, the node dials a gateway itself.

Every option can also be set in a config file (as for inflight serve; config/inflight-node.ini lists every
key with its default). The command line overrides the file, the file overrides the defaults.
)";

}  // namespace

node_settings load_node_settings(int argc, char** argv) {
  node_settings settings;
  node_config config(settings);
  settings.dump_config = load_options(config, argc, argv);
  if (settings.model.path.empty()) settings.model.path = INFLIGHT_DEFAULT_MODEL;
  if (settings.model_name.empty()) settings.model_name = model_name_of(settings.model.path);
  for (const std::string& gateway : settings.join) {
    try {
      parse_host_port(gateway);
    } catch (const std::invalid_argument& error) {
      throw usage_error(std::string("--join ") + error.what());
    }
  }
  return settings;
}

std::string node_help_text() {
  node_settings defaults;
  const node_config config(defaults);
  return options_help(config, help_intro);
}

std::string node_settings_to_ini(const node_settings& settings) {
  node_settings copy = settings;
  const node_config config(copy);
  return options_to_ini(config);
}

}  // namespace inflight::cli
