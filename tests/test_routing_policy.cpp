// The gateway's routing policy (actors/routing_policy): least loaded, prefix affinity, nodes that are down,
// draining, refused or silent, weights and ties, driven synchronously with hand-made load reports.
#include <doctest/doctest.h>

#include <chrono>
#include <map>
#include <numeric>
#include <vector>

#include "routing_policy.hpp"

using namespace inflight::cluster;
using clock_type = routing_policy::clock;
using namespace std::chrono_literals;

namespace {

node_load loaded(int32_t waiting, int32_t running, int32_t kv_free = 100, int32_t kv_total = 100) {
  node_load load;
  load.waiting = waiting;
  load.running = running;
  load.kv_blocks_free = kv_free;
  load.kv_blocks_total = kv_total;
  return load;
}

// Nodes "a", "b", ... all up and reporting `loads` at t0.
routing_policy with_nodes(const std::vector<node_load>& loads, clock_type::time_point t0, routing_options options = {}) {
  routing_policy policy(options);
  for (size_t i = 0; i < loads.size(); ++i) {
    const int32_t node = policy.add_node(std::string(1, char('a' + i)));
    policy.set_state(node, node_state::up, t0);
    policy.report(node, loads[i], t0);
  }
  return policy;
}

std::vector<int32_t> tokens(int32_t count, int32_t first) {
  std::vector<int32_t> out(static_cast<size_t>(count));
  std::iota(out.begin(), out.end(), first);
  return out;
}

}  // namespace

TEST_CASE("routing: the least loaded node wins, and the gateway's own in-flight count is load too") {
  const auto t0 = clock_type::now();
  routing_policy policy = with_nodes({loaded(3, 8), loaded(0, 2), loaded(1, 5)}, t0);
  auto pick = policy.pick({}, {}, t0);
  REQUIRE(pick);
  CHECK(pick->node == 1);
  CHECK_FALSE(pick->by_affinity);
  // Requests routed since the last report count: b fills up until it is as loaded as c (6), then they share.
  std::map<int32_t, int> counts;
  for (int i = 0; i < 9; ++i) counts[policy.pick({}, {}, t0)->node]++;
  CHECK(counts[0] == 0);
  CHECK(policy.nodes()[1].in_flight >= 6);
  CHECK(policy.nodes()[1].in_flight + policy.nodes()[2].in_flight == 10 + 0);  // 1 + 9 picks, c reported 6 itself
  policy.release(1);
  CHECK(policy.nodes()[1].in_flight == counts[1]);
  CHECK(policy.nodes()[1].routed_total == counts[1] + 1);
}

TEST_CASE("routing: down, draining, refused, connecting and silent nodes are never picked") {
  const auto t0 = clock_type::now();
  routing_options options;
  options.report_timeout = 1000ms;
  routing_policy policy = with_nodes({loaded(0, 0), loaded(0, 0), loaded(0, 0), loaded(0, 0), loaded(9, 9)}, t0, options);
  policy.set_state(0, node_state::down, t0);
  policy.set_state(1, node_state::refused, t0);
  policy.set_state(2, node_state::connecting, t0);
  node_load leaving = loaded(0, 0);
  leaving.draining = true;
  policy.report(3, leaving, t0);  // a draining report moves an up node to draining
  CHECK(policy.nodes()[3].state == node_state::draining);
  for (int i = 0; i < 5; ++i) CHECK(policy.pick({}, {}, t0)->node == 4);  // busy, but the only one up
  // Silent for longer than the report timeout: not eligible until it reports again.
  CHECK_FALSE(policy.pick({}, {}, t0 + 1500ms));
  policy.report(4, loaded(0, 0), t0 + 1600ms);
  CHECK(policy.pick({}, {}, t0 + 1700ms)->node == 4);
  // Every node gone: no choice at all (the gateway answers 503).
  policy.set_state(4, node_state::down, t0);
  CHECK_FALSE(policy.pick({}, {}, t0 + 1700ms));
}

TEST_CASE("routing: an excluded node (the request failed there) is skipped") {
  const auto t0 = clock_type::now();
  routing_policy policy = with_nodes({loaded(0, 0), loaded(5, 5)}, t0);
  const std::vector<int32_t> excluded = {0};
  CHECK(policy.pick({}, excluded, t0)->node == 1);
  const std::vector<int32_t> both = {0, 1};
  CHECK_FALSE(policy.pick({}, both, t0));
}

TEST_CASE("routing: ties go to the larger share of free KV blocks, then take turns") {
  const auto t0 = clock_type::now();
  routing_policy kv = with_nodes({loaded(2, 2, 10, 100), loaded(2, 2, 80, 100)}, t0);
  CHECK(kv.pick({}, {}, t0)->node == 1);

  routing_policy equal = with_nodes({loaded(4, 4), loaded(4, 4), loaded(4, 4)}, t0);
  // In-flight counts stay below the reported 8, so the three remain tied: strict rotation.
  std::vector<int32_t> order;
  for (int i = 0; i < 6; ++i) order.push_back(equal.pick({}, {}, t0)->node);
  CHECK(order == std::vector<int32_t>{0, 1, 2, 0, 1, 2});
}

TEST_CASE("routing: a report still showing a finished request does not beat the rotation") {
  // Node 1's last report (up to an interval old) still counts the request that just finished there, with
  // its KV block; node 0 just got a request of ours. Equal load, near-equal KV: node 1 is next in turn.
  const auto t0 = clock_type::now();
  routing_policy policy = with_nodes({loaded(0, 0, 2912, 2912), loaded(0, 1, 2911, 2912)}, t0);
  CHECK(policy.pick({}, {}, t0)->node == 0);
  CHECK(policy.pick({}, {}, t0)->node == 1);
}

TEST_CASE("routing: a node that went down forgets its last report") {
  const auto t0 = clock_type::now();
  routing_policy policy = with_nodes({loaded(0, 0), loaded(30, 30)}, t0);
  policy.set_state(1, node_state::down, t0);
  CHECK(policy.nodes()[1].load.running == 0);
  CHECK(policy.nodes()[1].load.waiting == 0);
  policy.set_state(1, node_state::up, t0);
  CHECK(policy.pick({}, {}, t0)->node == 0);  // the rotation starts at 0
  CHECK(policy.pick({}, {}, t0)->node == 1);  // 1 vs 1 in flight: its old load of 60 no longer counts
}

TEST_CASE("routing: weights scale load, so a node of weight 2 takes twice the sequences") {
  const auto t0 = clock_type::now();
  routing_policy policy(routing_options{});
  const int32_t big = policy.add_node("big", 2.0), small = policy.add_node("small", 1.0);
  for (const int32_t node : {big, small}) {
    policy.set_state(node, node_state::up, t0);
    policy.report(node, loaded(0, 0), t0);
  }
  std::map<int32_t, int> counts;
  for (int i = 0; i < 30; ++i) counts[policy.pick({}, {}, t0)->node]++;
  CHECK(counts[big] == 20);
  CHECK(counts[small] == 10);
  CHECK_THROWS_AS(policy.add_node("zero", 0.0), std::invalid_argument);
}

TEST_CASE("routing: prompts sharing a prefix go to the node that served it, until it is overloaded") {
  const auto t0 = clock_type::now();
  routing_options options;
  options.block_size = 4;
  options.affinity_slack_absolute = 2;
  options.affinity_slack_relative = 0.0;
  routing_policy policy = with_nodes({loaded(0, 0), loaded(0, 0)}, t0, options);

  // Two "system prompts" of 3 blocks, each followed by different user text.
  std::vector<int32_t> first = tokens(12, 100), second = tokens(12, 500);
  auto with_suffix = [](std::vector<int32_t> prefix, int32_t tail) {
    for (int i = 0; i < 5; ++i) prefix.push_back(tail + i);
    return prefix;
  };
  const auto h1 = routing_policy::prefix_hashes(with_suffix(first, 1), 4, 64);
  const auto h2 = routing_policy::prefix_hashes(with_suffix(second, 1), 4, 64);
  CHECK(h1.size() == 4);  // 17 tokens: 4 full blocks
  const int32_t home1 = policy.pick(h1, {}, t0)->node;
  const int32_t home2 = policy.pick(h2, {}, t0)->node;
  CHECK(home1 != home2);  // nothing remembered yet: least loaded, in turn

  // The same system prompt with other user text: same node, by affinity, though the loads are equal.
  for (int32_t tail = 10; tail < 12; ++tail) {
    const auto again = policy.pick(routing_policy::prefix_hashes(with_suffix(first, tail), 4, 64), {}, t0);
    CHECK(again->node == home1);
    CHECK(again->by_affinity);
  }
  // home1 now has 3 in flight, the other 1: within the slack of 2, affinity still holds...
  CHECK(policy.pick(h1, {}, t0)->node == home1);
  // ... at 4 against 1 it no longer does: the request goes to the least loaded node, which now owns it.
  const auto spilled = policy.pick(h1, {}, t0);
  CHECK(spilled->node == home2);
  CHECK_FALSE(spilled->by_affinity);
  CHECK(policy.pick(h1, {}, t0)->node == home2);
  CHECK(policy.nodes()[size_t(home1)].affinity_routed == 3);

  // A node that went down loses its prefixes to the others.
  policy.set_state(home2, node_state::down, t0);
  CHECK(policy.pick(h2, {}, t0)->node == home1);

  // With affinity off, the same prompts just take turns by load.
  options.prefix_affinity = false;
  routing_policy plain = with_nodes({loaded(0, 0), loaded(0, 0)}, t0, options);
  std::map<int32_t, int> counts;
  for (int i = 0; i < 10; ++i) counts[plain.pick(h1, {}, t0)->node]++;
  CHECK(counts[0] == 5);
  CHECK(counts[1] == 5);
}

TEST_CASE("routing: prefix hashes are chained over full blocks and capped") {
  const std::vector<int32_t> a = tokens(40, 0);
  std::vector<int32_t> b = a;
  b[9] = 999;  // differs in the third block of 4
  const auto ha = routing_policy::prefix_hashes(a, 4, 64), hb = routing_policy::prefix_hashes(b, 4, 64);
  REQUIRE(ha.size() == 10);
  CHECK(ha[0] == hb[0]);
  CHECK(ha[1] == hb[1]);
  for (size_t i = 2; i < ha.size(); ++i) CHECK(ha[i] != hb[i]);  // every later block differs too
  CHECK(routing_policy::prefix_hashes(a, 4, 3).size() == 3);
  CHECK(routing_policy::prefix_hashes(tokens(3, 0), 4, 64).empty());  // shorter than a block
}

TEST_CASE("routing: the affinity table forgets the least recently used prefixes beyond its capacity") {
  const auto t0 = clock_type::now();
  routing_options options;
  options.block_size = 1;
  options.affinity_capacity = 4;
  options.affinity_slack_absolute = 100;
  routing_policy policy = with_nodes({loaded(0, 0), loaded(0, 0)}, t0, options);
  const std::vector<uint64_t> old_prefix = {1}, fresh = {2, 3, 4, 5};
  const int32_t home = policy.pick(old_prefix, {}, t0)->node;
  CHECK(policy.pick(old_prefix, {}, t0)->node == home);
  policy.pick(fresh, {}, t0);  // four new hashes push hash 1 out
  // Forgotten: routed by load now, not by affinity.
  CHECK_FALSE(policy.pick(old_prefix, {}, t0)->by_affinity);
}
