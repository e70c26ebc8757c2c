// The gateway's routing policy: which engine node gets the next request. A plain class (STYLE.md #1): the
// router actor feeds it node states and the load reports the nodes push, and asks it to pick; unit tests
// drive it synchronously (tests/test_routing_policy.cpp).
//
// A node's load is the number of sequences it holds, waiting or running, divided by its weight: the larger
// of what the node last reported (which counts every gateway's requests) and the requests this gateway has
// routed to it and not yet seen finish (which counts the burst since that report). Only nodes that are up
// and reported within report_timeout are eligible; draining, down, refused and silent nodes never are.
//
// pick():
//   1. prefix affinity: prompts are hashed in chained blocks (prefix_hashes), and the policy remembers which
//      node each block hash last went to. The node of the longest remembered prefix gets the request while
//      its load exceeds the least loaded node's by at most max(slack_absolute, slack_relative * least), so
//      shared system prompts keep hitting one node's prefix cache without piling everything onto it;
//   2. otherwise the least loaded node; ties go to the node with the larger share of free KV blocks, then
//      round robin, so equal nodes take turns.
#pragma once

#include <chrono>
#include <cstdint>
#include <list>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "inflight/cluster_protocol.hpp"

namespace inflight::cluster {

enum class node_state : uint8_t {
  connecting,  // configured or joined, no handshake completed yet
  up,          // welcomed: may be routed to
  draining,    // the node is leaving: finishes what it runs, takes nothing new
  down,        // the link is lost (or the node went silent); the router reconnects
  refused,     // the handshake failed: wrong secret, version or model; the router retries slowly
};
const char* to_string(node_state state);

struct routing_options {
  bool prefix_affinity = true;
  int32_t block_size = 16;         // tokens per hashed prompt block (the nodes' KV block size)
  int32_t max_prefix_blocks = 64;  // blocks of a prompt that are hashed, from its start
  double affinity_slack_absolute = 4;
  double affinity_slack_relative = 0.5;
  double kv_tie_margin = 0.05;  // equally loaded nodes whose free-KV shares differ by less are a tie
  size_t affinity_capacity = size_t(1) << 16;  // block hashes remembered, least recently used forgotten first
  std::chrono::milliseconds report_timeout{1000};
};

// The policy's view of one node.
struct routed_node {
  std::string name;
  double weight = 1.0;
  node_state state = node_state::connecting;
  node_load load;                                // the last report
  std::chrono::steady_clock::time_point heard{};  // last report, or when it came up
  int32_t in_flight = 0;       // routed by this gateway, not finished yet
  int64_t routed_total = 0;    // requests routed to it, ever
  int64_t affinity_routed = 0; // ... of which by prefix affinity
};

class routing_policy {
 public:
  using clock = std::chrono::steady_clock;

  explicit routing_policy(routing_options options = {});

  // The node's index (a new node starts connecting); an existing name keeps its index and takes the weight.
  int32_t add_node(std::string name, double weight = 1.0);
  std::optional<int32_t> find(std::string_view name) const;

  // Becoming up counts as hearing from the node (its first report follows).
  void set_state(int32_t node, node_state state, clock::time_point now = clock::now());
  // Gives a node's slot to another node (a gateway reuses the slots of joined nodes that are gone): new
  // name, weight 1, connecting, no load and no counts.
  void reassign(int32_t node, std::string name);
  // A load report; draining in it moves an up node to draining.
  void report(int32_t node, const node_load& load, clock::time_point now = clock::now());

  struct choice {
    int32_t node = -1;
    bool by_affinity = false;
  };
  // The node for a request whose prompt has these prefix hashes, never one in `excluded` (nodes this
  // request already failed on). Counts the request in the node's in_flight. Empty: no node is eligible.
  std::optional<choice> pick(std::span<const uint64_t> prefix_hashes, std::span<const int32_t> excluded = {},
                             clock::time_point now = clock::now());
  // A request routed to `node` has ended (or moved elsewhere).
  void release(int32_t node);

  bool eligible(int32_t node, clock::time_point now = clock::now()) const;
  double load(int32_t node) const;
  const std::vector<routed_node>& nodes() const { return nodes_; }
  const routing_options& options() const { return options_; }

  // Chained hashes of the prompt's first full blocks: hash i covers tokens [0, (i + 1) * block_size), so
  // two prompts share hash i exactly when (up to collisions) they share those tokens.
  static std::vector<uint64_t> prefix_hashes(std::span<const int32_t> tokens, int32_t block_size, int32_t max_blocks);

 private:
  void remember(std::span<const uint64_t> prefix_hashes, int32_t node);

  routing_options options_;
  std::vector<routed_node> nodes_;
  size_t next_ = 0;  // round-robin cursor for ties
  // Affinity: block hash -> node that last served it, with an LRU order (front: most recent).
  struct affinity_entry {
    int32_t node;
    std::list<uint64_t>::iterator position;
  };
  std::unordered_map<uint64_t, affinity_entry> affinity_;
  std::list<uint64_t> recency_;
};

}  // namespace inflight::cluster
