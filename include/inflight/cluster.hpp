// Several machines: engine nodes behind one gateway, over CAF's own distributed actors (the middleman, BASP
// over TCP; docs/ARCHITECTURE.md "Several machines"). This header includes no CAF.
//
//   node:     auto node = engine_node::create(std::move(backend), tok, chat, engine_options, card, node_options);
//             (the scheduler, KV-manager and executor actors, published with a front actor on a port)
//   gateway:  auto engine = make_gateway(gateway_options);   an inference_engine like the in-process one:
//             its request actors tokenize and detokenize here and send only token ids and sampling
//             parameters to the node the router picks; the node streams token ids back.
//
// The gateway needs no model file: the first node it meets sends a model card (tokenizer, chat template,
// context length, name), and every later node must serve the same model (the card's fingerprint).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "inflight/backend.hpp"
#include "inflight/chat_template.hpp"
#include "inflight/cluster_protocol.hpp"
#include "inflight/engine.hpp"

namespace inflight {

class tokenizer;
namespace gguf { class gguf_file; }

// How gateway and nodes reach and trust each other; both sides need the same settings.
struct cluster_link_options {
  // Shared secret (HMAC challenge-response, actors/cluster_auth.hpp); empty: no authentication. A secret on
  // one side only is refused by both.
  std::string secret;
  // TLS through CAF's OpenSSL module when a certificate is given: mutual (each side presents a certificate
  // that the CA file verifies), so a peer without one cannot even open a link.
  std::string tls_certificate, tls_key, tls_ca_file, tls_passphrase;
  // CAF's heartbeat on every link, and how long a silent link lives: a hung peer (SIGSTOP, a half-open TCP
  // connection) is declared down after link_timeout. Both sides must use heartbeats.
  std::chrono::milliseconds heartbeat{500};
  std::chrono::milliseconds link_timeout{3000};
  bool tls() const { return !tls_certificate.empty(); }
};

// Checks the link options before any actor starts: TLS files that load, timeouts that make sense. Returns
// what is wrong ("" when nothing is).
std::string check_cluster_link_options(const cluster_link_options& link);

// "host:port" -> (host, port); "[::1]:9100" for IPv6. Throws std::invalid_argument naming the text.
std::pair<std::string, uint16_t> parse_host_port(const std::string& text);

// What gateways learn of the model in `file`: its tokenizer, chat template and name, and its fingerprint
// for "every node serves the same model": SHA-256 over the file's metadata and tensor table (the bytes
// before the tensor data) and the first 4 KiB of every tensor's data. engine_node::create adds the
// engine's context length and block size.
cluster::model_card describe_model(const gguf::gguf_file& file);

struct node_options {
  std::string host = "127.0.0.1";  // listen address of the node's front actor; 0.0.0.0 for every interface
  uint16_t port = 9100;            // 0: any free port (engine_node::port())
  std::string name;                // how gateways list it; empty: host:port
  std::vector<std::string> join;   // gateways to join ("host:port" of their cluster port), again after a loss
  cluster_link_options link;
  std::chrono::milliseconds report_interval{100};  // load reports to the gateways (also their heartbeat)
  cluster::model_card card;                        // describe_model() of the served GGUF
  std::function<void(const std::string&)> log;     // one line per event worth telling (stderr by default)
  // Called once, from an actor thread, when the engine fails (its KV manager, executor or scheduler
  // stopped): the node then fails every request and should exit, so that gateways fail over.
  std::function<void(const std::string&)> on_failure;
};

class engine_node {
 public:
  // Starts the engine's actors and publishes the node. Throws std::invalid_argument for unusable options,
  // std::runtime_error when it cannot listen.
  static std::unique_ptr<engine_node> create(std::unique_ptr<backend> model, std::shared_ptr<const tokenizer> tok,
                                             chat_template chat, const engine_options& engine,
                                             const node_options& options);
  virtual ~engine_node() = default;
  virtual uint16_t port() const = 0;
  virtual std::string name() const = 0;
  // Leaves the cluster gracefully: takes no new sequences (gateways route around it), lets the running
  // ones finish for up to `grace`, then cancels the rest. Blocks until then.
  virtual void drain(std::chrono::milliseconds grace) = 0;
  virtual engine_stats stats() = 0;
};

struct gateway_node {
  std::string address;  // host:port of the node's front actor
  double weight = 1.0;  // share of the load: a node of weight 2 gets twice the sequences
};

struct gateway_options {
  std::vector<gateway_node> nodes;  // dialed at start, and again with backoff whenever a link is lost
  std::string name = "gateway";     // for the nodes' logs
  // Nodes may join (inflight node --join HOST:PORT) when accept_joins: the gateway publishes its router on
  // this address; port 0 picks one (gateway_cluster_port()).
  bool accept_joins = false;
  std::string join_host = "127.0.0.1";
  uint16_t join_port = 9200;
  cluster_link_options link;
  bool prefix_affinity = true;
  std::chrono::milliseconds report_timeout{1000};  // an up node silent for this long gets no new requests
  std::chrono::milliseconds reconnect_min{100}, reconnect_max{2000};  // backoff between dials of a lost node
  std::chrono::milliseconds connect_timeout{3000};
  int actor_threads = 2;
  std::string model_name;  // what clients call the model; empty: the name the nodes give
  std::function<void(const std::string&)> log;
};

// The gateway's engine: submit() routes each request to an engine node. Throws std::invalid_argument for
// unusable options, std::runtime_error when it cannot publish its cluster port.
std::unique_ptr<inference_engine> make_gateway(const gateway_options& options);
// The port nodes join on, for a gateway made with accept_joins (0 otherwise).
uint16_t gateway_cluster_port(const inference_engine& gateway);

}  // namespace inflight
