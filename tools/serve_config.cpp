// `inflight serve`'s option table (option_table.hpp does the reading and checking).
#include "serve_config.hpp"

#include <algorithm>
#include <map>

#include "shared_options.hpp"

namespace inflight::cli {

namespace {

// Options appear in --help, --dump-config and config/inflight.ini in this order.
class serve_config : public option_table {
 public:
  explicit serve_config(serve_settings& s) : option_table("serve") {
    declare_model_options(*this, s.model, s.server.model_name);
    declare_scheduling_options(*this, s.engine);

    group("HTTP");
    text("host", "ADDRESS", "listen address; 0.0.0.0 for every interface", s.server.host, false);
    integer("port", "listen port; 0 picks a free one", 0, 65535, s.server.port);
    list("api-key", "KEY",
         "require \"Authorization: Bearer KEY\" on every endpoint but /health, /ready and the page (whose "
         "WebSocket may pass ?api_key=KEY); repeat it or give a comma list for several keys",
         s.server.api_keys);
    integer("body-limit-kb", "largest request body (and WebSocket message) in KiB; beyond, 413", 1, 1 << 20,
            [&s] { return int64_t(s.server.body_limit >> 10); },
            [&s](int64_t kb) { s.server.body_limit = size_t(kb) << 10; });
    integer("header-limit-kb", "largest request header in KiB; beyond, 431", 1, 1024,
            [&s] { return int64_t(s.server.header_limit >> 10); },
            [&s](int64_t kb) { s.server.header_limit = size_t(kb) << 10; });
    duration("read-timeout-s", "a connection that sends nothing for this many seconds is closed", 1, 86400,
             s.server.read_timeout);
    duration("header-timeout-s",
             "a request's headers must arrive within this many seconds of its first byte (however slowly they "
             "trickle in), or the connection is closed",
             1, 3600, s.server.header_timeout);
    integer("max-connections", "open connections at most; beyond, a new one gets 503 with Retry-After", 1, 1 << 20,
            s.server.max_connections);
    choice("log-requests", "FORMAT", "one line per request on stderr: text (logfmt key=value), json (one object per line) or off",
           {"text", "json", "off"},
           [&s] {
             const net::request_log_format f = s.server.request_log;
             return std::string(f == net::request_log_format::json ? "json" : f == net::request_log_format::off ? "off" : "text");
           },
           [&s](const std::string& name) { net::parse_request_log_format(name, s.server.request_log); });
    integer("max-ws-requests", "requests running at once on one WebSocket; beyond, an error frame (429)", 1, 4096,
            s.server.max_ws_requests);
    duration("shutdown-grace-s",
             "on SIGINT/SIGTERM, let running requests finish for up to this many seconds, then cancel the rest", 0,
             3600, s.shutdown_grace);

    group("Request limits");
    integer("max-n", "choices (\"n\") in one request at most", 1, 1024, s.server.limits.max_n);
    integer("max-prompts", "prompts in one /v1/completions request at most", 1, 4096, s.server.limits.max_prompts);
    integer("max-stop", "stop strings in one request at most", 0, 1024, s.server.limits.max_stop);
    integer("default-max-tokens", "max_tokens of a request that gives none", 1, 1 << 20,
            s.server.limits.default_max_tokens);

    group("Gateway (engine nodes on other machines: inflight node)");
    list("node", "HOST:PORT",
         "serve as a gateway to this engine node (repeat it, or a comma list): no model runs here; the model, "
         "device and scheduling options belong to the nodes",
         s.nodes);
    list("node-weight", "HOST:PORT=W", "a listed node's share of the load (default 1): weight 2 gets twice the sequences",
         s.node_weights);
    text("cluster-host", "ADDRESS", "where nodes join the gateway (inflight node --join)", s.cluster_host, false);
    integer("cluster-port", "port nodes join the gateway on; 0: none (only --node)", 0, 65535, s.cluster_port);
    flag("prefix-affinity",
         "send prompts that share a prefix with recent ones to the node that served them (its prefix cache hits)",
         s.prefix_affinity);
    duration("node-report-timeout-ms", "a node whose load reports stop for this long gets no new requests", 100,
             3600000, s.report_timeout);
    declare_link_options(*this, s.link);
  }
};

// Options that configure an engine: a gateway has none (its nodes do).
constexpr const char* engine_only_options[] = {
    "model", "device", "threads", "kv-cache-mb", "gpu-memory-fraction", "cuda-graphs", "block-size",
    "max-num-seqs", "max-num-batched-tokens", "max-waiting", "batching", "static-batch-window-ms",
    "prefix-caching", "pipelining"};

// key -> value of the lines of an INI text that options_to_ini wrote.
std::map<std::string, std::string> ini_values(const std::string& ini) {
  std::map<std::string, std::string> values;
  size_t start = 0;
  while (start < ini.size()) {
    size_t end = ini.find('\n', start);
    if (end == std::string::npos) end = ini.size();
    const std::string line = ini.substr(start, end - start);
    const size_t equals = line.find('=');
    if (equals != std::string::npos) values[line.substr(0, equals)] = line.substr(equals + 1);
    start = end + 1;
  }
  return values;
}

constexpr const char* help_intro = R"(usage: inflight serve [--config-file=PATH] [options]
       inflight serve --node HOST:PORT [--node HOST:PORT ...] [options]    (a gateway to engine nodes)

Serves the model over HTTP with an OpenAI-compatible API until interrupted (Ctrl-C or SIGTERM):
POST /v1/completions, POST /v1/chat/completions (both with "stream": true for server-sent events),
GET /v1/models, GET /v1/nodes, GET /health, GET /ready, GET /metrics, POST /tokenize, POST /detokenize,
WebSocket /v1/ws, the page at /.

With --node (or --cluster-port), no model runs in this process: it is a gateway that routes each request
to an engine node (inflight node --help) and streams the answer back; the nodes tell it the model.

Every option below can also be set in a config file: CAF's INI format, the option's name without the
dashes as the key, under [global]; strings in double quotes, flags true or false, lists ["a", "b"].
config/inflight.ini lists every key with its default. The command line overrides the file, the file
overrides the defaults. An unknown key or section, a value of the wrong type or out of range, or a key
set twice is an error (exit code 2), as is a bad option.
)";

}  // namespace

serve_settings load_serve_settings(int argc, char** argv) {
  serve_settings settings;
  serve_config config(settings);
  settings.dump_config = load_options(config, argc, argv);
  // Empty means "the default", in a file as on the command line.
  if (settings.model.path.empty()) settings.model.path = INFLIGHT_DEFAULT_MODEL;
  if (settings.gateway()) {
    // Refused only when it differs from the default, so that config/inflight.ini (every key at its default)
    // serves a gateway too.
    const auto defaults = ini_values(serve_settings_to_ini(serve_settings{}));
    const auto values = ini_values(serve_settings_to_ini(settings));
    for (const char* name : engine_only_options) {
      if (config.set_options().count(name) && values.at(name) != defaults.at(name))
        throw usage_error("--" + std::string(name) +
                          " configures an engine: give it to the nodes (inflight node), not to a gateway (--node)");
    }
    for (const std::string& node : settings.nodes) {
      try {
        parse_host_port(node);
      } catch (const std::invalid_argument& error) {
        throw usage_error(std::string("--node ") + error.what());
      }
    }
    return settings;  // the nodes name the model unless --model-name does
  }
  if (!settings.node_weights.empty()) throw usage_error("--node-weight needs --node");
  if (settings.server.model_name.empty()) settings.server.model_name = model_name_of(settings.model.path);
  return settings;
}

std::string serve_help_text() {
  serve_settings defaults;
  const serve_config config(defaults);
  return options_help(config, help_intro);
}

std::string serve_settings_to_ini(const serve_settings& settings) {
  // The config reads and writes through the settings it is given; a copy keeps `settings` const.
  serve_settings copy = settings;
  const serve_config config(copy);
  return options_to_ini(config);
}

gateway_options gateway_options_of(const serve_settings& s) {
  gateway_options options;
  for (const std::string& node : s.nodes) options.nodes.push_back({node, 1.0});
  for (const std::string& entry : s.node_weights) {
    const size_t eq = entry.rfind('=');
    if (eq == std::string::npos) throw usage_error("--node-weight: expected HOST:PORT=WEIGHT, got '" + entry + "'");
    const std::string address = entry.substr(0, eq);
    double weight = 0;
    try {
      size_t used = 0;
      weight = std::stod(entry.substr(eq + 1), &used);
      if (used != entry.size() - eq - 1) weight = 0;
    } catch (const std::exception&) {
      weight = 0;
    }
    if (!(weight > 0) || weight > 1e6) throw usage_error("--node-weight: '" + entry + "': the weight must be a positive number");
    const auto found = std::find_if(options.nodes.begin(), options.nodes.end(),
                                    [&](const gateway_node& node) { return node.address == address; });
    if (found == options.nodes.end()) throw usage_error("--node-weight: " + address + " is not a --node");
    found->weight = weight;
  }
  options.accept_joins = s.cluster_port != 0;
  options.join_host = s.cluster_host;
  options.join_port = s.cluster_port;
  options.link = resolve_link(s.link);
  options.prefix_affinity = s.prefix_affinity;
  options.report_timeout = s.report_timeout;
  options.actor_threads = s.engine.actor_threads;
  options.model_name = s.server.model_name;
  return options;
}

}  // namespace inflight::cli
