// The actors of a cluster (include/inflight/cluster.hpp), as spawn functions, and what only they exchange.
// Internal to actors/: node_actor.cpp (an engine node's front), router_actor.cpp (the gateway's router),
// cluster_dialer.cpp (opens a link), wired by engine_node.cpp and gateway_engine.cpp.
//
//   gateway                                         node
//   request actor ──route_atom──▶ router
//   router ──hello / proof (handshake)────────────▶ front ──▶ node_gate.admit(gateway's CAF node)
//   request actor ──sequence_submit, cancel_atom──▶ front ──delegate──▶ scheduler
//   request actor ◀──token_event─────────────────────────────────────── scheduler
//   router ◀──node_load (timer)─────────────────── front
//   router ◀──(join_atom, version, name, front)─── front        when the node was told to --join
#pragma once

#include <caf/actor.hpp>
#include <caf/atom.hpp>
#include <caf/fwd.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine_actors.hpp"
#include "inflight/cluster.hpp"
#include "inflight/cluster_protocol_inspect.hpp"
#include "routing_policy.hpp"

namespace inflight::cluster {

using join_atom = caf::atom_constant<caf::atom("ifjoin")>;      // node -> gateway router: take me
using dialed_atom = caf::atom_constant<caf::atom("ifdialed")>;  // dialer -> its owner: the link's outcome
using redial_atom = caf::atom_constant<caf::atom("ifredial")>;  // router / front -> itself: try again
using report_atom = caf::atom_constant<caf::atom("ifreport")>;  // front -> itself: time for a load report
using drain_atom = caf::atom_constant<caf::atom("ifdrain")>;    // engine_node -> front: leave the cluster
using tick_atom = caf::atom_constant<caf::atom("iftick")>;      // router -> itself: staleness, snapshot
using bye_atom = caf::atom_constant<caf::atom("ifbye")>;        // router -> front: I dropped our link
using joincheck_atom = caf::atom_constant<caf::atom("ifjoinchk")>;  // front -> itself: did a handshake follow?
using name_atom = caf::atom_constant<caf::atom("ifname")>;      // engine_node -> front: your name (once published)

// Registers every message type that crosses between gateway and node, under the same names on both sides
// (docs/caf-0.17.md §3: an unregistered type is dropped without a word).
void add_cluster_message_types(caf::actor_system_config& config);

// The message being handled comes from an actor of this process (timers, the dialer, engine_node), not from
// a peer on the middleman: what only this process may ask (rename, drain, route, its own timers) checks it.
template <class Actor>
bool local_sender(Actor* self) {
  return self->current_sender() && self->current_sender()->node() == self->node();
}

// The protocol version this process speaks: protocol_version, unless INFLIGHT_PROTOCOL_VERSION_OVERRIDE
// (for the tests of version refusal only: a real mismatch needs two builds) says otherwise.
uint32_t spoken_protocol_version();
// The CAF settings of a process that talks to others: the middleman (and OpenSSL when TLS is on), its
// heartbeat and link timeout, work sharing.
void configure_cluster_system(caf::actor_system_config& config, const cluster_link_options& link, int threads);

// Opens a link to the actor published at host:port: first a plain TCP connect with `timeout` (CAF's own
// connect blocks its middleman for as long as the kernel tries, minutes for a host that drops packets),
// then CAF's connect over it (TLS when link.tls()). Sends (dialed_atom, tag, caf::actor, std::string error)
// to `owner`: the published actor, or an invalid handle and what went wrong. Then it quits.
void spawn_dialer(caf::actor_system& system, const std::string& host, uint16_t port, bool tls,
                  std::chrono::milliseconds timeout, caf::actor owner, uint64_t tag);

// A thread-safe snapshot of the gateway's cluster, written by the router, read by the gateway engine and
// the HTTP server without touching an actor.
class cluster_view {
 public:
  void set_model(std::shared_ptr<const served_model> model, std::shared_ptr<const engine::request_context> context);
  std::shared_ptr<const served_model> model() const;
  std::shared_ptr<const engine::request_context> context() const;
  void set_nodes(std::vector<node_status> nodes);
  std::vector<node_status> nodes() const;

 private:
  mutable std::mutex mutex_;
  std::shared_ptr<const served_model> model_;
  std::shared_ptr<const engine::request_context> context_;
  std::vector<node_status> nodes_;
};

struct front_config {
  std::string name;
  std::string secret;
  model_card card;
  std::chrono::milliseconds report_interval{100};
  std::vector<std::pair<std::string, uint16_t>> join;  // gateways to join
  bool tls = false;
  std::chrono::milliseconds connect_timeout{3000}, rejoin_min{100}, rejoin_max{2000};
  // After a refused or failed join: the gateway will likely say the same again soon (a version mismatch, a
  // name in use), so the next try waits this long.
  std::chrono::milliseconds rejoin_after_refusal{10000};
  // An accepted join that no completed handshake follows within this is made again (the gateway gave up
  // on it: a timeout, a refusal it sent only in the handshake).
  std::chrono::milliseconds join_handshake_timeout{15000};
  std::function<void(const std::string&)> log;
  std::function<void(const std::string&)> on_failure;
};

// An engine node's published actor: the handshake, the gate in front of the scheduler, load reports,
// draining, joining gateways, and the watch over the engine's actors.
caf::actor spawn_node_front(caf::actor_system& system, engine::engine_actors engine,
                            std::shared_ptr<engine::node_gate> gate, front_config config);

struct router_config {
  std::vector<gateway_node> nodes;
  std::string gateway_name;
  std::string secret;
  bool tls = false;
  routing_options routing;
  std::chrono::milliseconds reconnect_min{100}, reconnect_max{2000}, connect_timeout{3000};
  std::chrono::milliseconds handshake_timeout{5000};
  std::string model_name;  // overrides the card's
  std::shared_ptr<cluster_view> view;
  std::function<void(const std::string&)> log;
};

// The gateway's router: links to the nodes (dial, handshake, reconnect with backoff), their load reports,
// the routing policy; answers request actors' (route_atom, prefix hashes, excluded) with
// (node index, node name, front) or (-1, why not, invalid handle).
caf::actor spawn_router(caf::actor_system& system, router_config config);

}  // namespace inflight::cluster
