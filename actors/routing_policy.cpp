#include "routing_policy.hpp"

#include <algorithm>
#include <stdexcept>

namespace inflight::cluster {

const char* to_string(node_state state) {
  switch (state) {
    case node_state::connecting: return "connecting";
    case node_state::up: return "up";
    case node_state::draining: return "draining";
    case node_state::down: return "down";
    case node_state::refused: return "refused";
  }
  return "unknown";
}

routing_policy::routing_policy(routing_options options) : options_(options) {
  if (options_.block_size < 1) throw std::invalid_argument("routing_policy: block_size must be positive");
}

int32_t routing_policy::add_node(std::string name, double weight) {
  if (!(weight > 0)) throw std::invalid_argument("routing_policy: a node's weight must be positive");
  if (const auto found = find(name)) {
    nodes_[size_t(*found)].weight = weight;
    return *found;
  }
  routed_node node;
  node.name = std::move(name);
  node.weight = weight;
  nodes_.push_back(std::move(node));
  return int32_t(nodes_.size() - 1);
}

std::optional<int32_t> routing_policy::find(std::string_view name) const {
  for (size_t i = 0; i < nodes_.size(); ++i)
    if (nodes_[i].name == name) return int32_t(i);
  return std::nullopt;
}

void routing_policy::set_state(int32_t node, node_state state, clock::time_point now) {
  routed_node& n = nodes_.at(size_t(node));
  if (state == node_state::up && n.state != node_state::up) n.heard = now;
  // A node that is gone holds no sequences of ours any more: its last report must not count against it
  // (or for it) when it comes back.
  if (state == node_state::down || state == node_state::refused) n.load = {};
  n.state = state;
}

void routing_policy::reassign(int32_t node, std::string name) {
  routed_node& n = nodes_.at(size_t(node));
  n = routed_node{};
  n.name = std::move(name);
}

void routing_policy::report(int32_t node, const node_load& load, clock::time_point now) {
  routed_node& n = nodes_.at(size_t(node));
  n.load = load;
  n.heard = now;
  if (load.draining && n.state == node_state::up) n.state = node_state::draining;
}

bool routing_policy::eligible(int32_t node, clock::time_point now) const {
  const routed_node& n = nodes_.at(size_t(node));
  return n.state == node_state::up && now - n.heard <= options_.report_timeout;
}

double routing_policy::load(int32_t node) const {
  const routed_node& n = nodes_.at(size_t(node));
  const int64_t reported = int64_t(n.load.waiting) + n.load.running;
  return double(std::max<int64_t>(reported, n.in_flight)) / n.weight;
}

namespace {

double free_kv_share(const routed_node& n) {
  return n.load.kv_blocks_total > 0 ? double(n.load.kv_blocks_free) / n.load.kv_blocks_total : 0.0;
}

}  // namespace

std::optional<routing_policy::choice> routing_policy::pick(std::span<const uint64_t> prefix_hashes,
                                                           std::span<const int32_t> excluded, clock::time_point now) {
  const auto usable = [&](int32_t node) {
    return eligible(node, now) && std::find(excluded.begin(), excluded.end(), node) == excluded.end();
  };
  // The least loaded usable node; ties by free KV share, then the first from the round-robin cursor on.
  std::optional<int32_t> least;
  const size_t count = nodes_.size();
  for (size_t k = 0; k < count; ++k) {
    const int32_t node = int32_t((next_ + k) % count);
    if (!usable(node)) continue;
    if (!least) {
      least = node;
      continue;
    }
    const double a = load(node), b = load(*least);
    // Free-KV shares within the margin are a tie (reports are up to an interval old, and one sequence's
    // blocks more or less say nothing): the rotation decides those.
    if (a < b || (a == b && free_kv_share(nodes_[size_t(node)]) >
                                free_kv_share(nodes_[size_t(*least)]) + options_.kv_tie_margin))
      least = node;
  }
  if (!least) return std::nullopt;

  choice chosen{*least, false};
  if (options_.prefix_affinity) {
    // The node that served the longest remembered prefix of this prompt.
    for (size_t i = prefix_hashes.size(); i-- > 0;) {
      const auto found = affinity_.find(prefix_hashes[i]);
      if (found == affinity_.end()) continue;
      const int32_t affine = found->second.node;
      if (!usable(affine)) break;  // its node cannot take it: shorter prefixes went there too, most likely
      const double least_load = load(*least);
      const double slack = std::max(options_.affinity_slack_absolute, options_.affinity_slack_relative * least_load);
      if (load(affine) - least_load <= slack) chosen = {affine, true};
      break;
    }
    remember(prefix_hashes, chosen.node);
  }
  routed_node& n = nodes_[size_t(chosen.node)];
  ++n.in_flight;
  ++n.routed_total;
  if (chosen.by_affinity) ++n.affinity_routed;
  if (!chosen.by_affinity) next_ = size_t(chosen.node + 1) % count;
  return chosen;
}

void routing_policy::release(int32_t node) {
  routed_node& n = nodes_.at(size_t(node));
  if (n.in_flight > 0) --n.in_flight;
}

void routing_policy::remember(std::span<const uint64_t> prefix_hashes, int32_t node) {
  for (const uint64_t hash : prefix_hashes) {
    if (const auto found = affinity_.find(hash); found != affinity_.end()) {
      found->second.node = node;
      recency_.splice(recency_.begin(), recency_, found->second.position);
      continue;
    }
    recency_.push_front(hash);
    affinity_.emplace(hash, affinity_entry{node, recency_.begin()});
    if (affinity_.size() > options_.affinity_capacity) {
      affinity_.erase(recency_.back());
      recency_.pop_back();
    }
  }
}

std::vector<uint64_t> routing_policy::prefix_hashes(std::span<const int32_t> tokens, int32_t block_size,
                                                    int32_t max_blocks) {
  std::vector<uint64_t> hashes;
  if (block_size < 1) return hashes;
  const size_t blocks = std::min(tokens.size() / size_t(block_size), size_t(std::max(0, max_blocks)));
  hashes.reserve(blocks);
  uint64_t hash = 0x9e3779b97f4a7c15ull;
  for (size_t b = 0; b < blocks; ++b) {
    for (size_t i = b * size_t(block_size); i < (b + 1) * size_t(block_size); ++i) {
      // splitmix64 of (running hash ^ token): every token changes all later hashes.
      uint64_t z = hash ^ (uint64_t(uint32_t(tokens[i])) + 0x9e3779b97f4a7c15ull);
      z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
      z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
      hash = z ^ (z >> 31);
    }
    hashes.push_back(hash);
  }
  return hashes;
}

}  // namespace inflight::cluster
