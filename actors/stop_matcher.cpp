#include "stop_matcher.hpp"

#include <algorithm>
#include <stdexcept>

namespace inflight::engine {
namespace {

// Appends the first `count` bytes of the virtual string held + piece.
void append_prefix(const std::string& held, std::string_view piece, size_t count, std::string& out) {
  const size_t from_held = std::min(count, held.size());
  out.append(held, 0, from_held);
  out.append(piece.substr(0, count - from_held));
}

}  // namespace

stop_matcher::stop_matcher(std::vector<std::string> stop_strings) : stop_strings_(std::move(stop_strings)) {
  for (size_t i = 0; i < stop_strings_.size(); ++i) {
    // An empty stop would match before the first byte and end every request with no output.
    if (stop_strings_[i].empty())
      throw std::invalid_argument("stop string " + std::to_string(i) + " is empty");
  }
  build();
}

const std::string& stop_matcher::matched_stop() const {
  static const std::string none;
  return stopped() ? stop_strings_[size_t(matched_stop_)] : none;
}

int32_t stop_matcher::child(int32_t state, unsigned char byte) const {
  for (const auto& [b, next] : nodes_[size_t(state)].children)
    if (b == byte) return next;
  return -1;
}

// Follows failure links until some suffix of the current prefix extends by `byte` (or the root is hit).
// Each byte raises the depth by at most one and every failure link lowers it, hence amortized O(1).
int32_t stop_matcher::step(int32_t state, unsigned char byte) const {
  for (;;) {
    if (const int32_t next = child(state, byte); next >= 0) return next;
    if (state == 0) return 0;
    state = nodes_[size_t(state)].fail;
  }
}

void stop_matcher::build() {
  nodes_.assign(1, node{});
  for (size_t i = 0; i < stop_strings_.size(); ++i) {
    int32_t state = 0;
    for (const char c : stop_strings_[i]) {
      int32_t next = child(state, static_cast<unsigned char>(c));
      if (next < 0) {
        next = int32_t(nodes_.size());
        node fresh;
        fresh.depth = nodes_[size_t(state)].depth + 1;
        nodes_.push_back(std::move(fresh));
        nodes_[size_t(state)].children.emplace_back(static_cast<unsigned char>(c), next);
      }
      state = next;
    }
    node& end = nodes_[size_t(state)];
    if (end.match_stop < 0) {  // a duplicate stop string keeps the first index
      end.match_len = end.depth;
      end.match_stop = int32_t(i);
    }
  }

  // Breadth first, so a node's failure target (strictly shallower) is complete before the node itself.
  std::vector<int32_t> queue;
  queue.reserve(nodes_.size());
  for (const auto& [b, next] : nodes_[0].children) queue.push_back(next);  // depth 1: fail to the root
  for (size_t head = 0; head < queue.size(); ++head) {
    const int32_t parent = queue[head];
    for (const auto& [b, next] : nodes_[size_t(parent)].children) {
      node& n = nodes_[size_t(next)];
      n.fail = step(nodes_[size_t(parent)].fail, b);
      // A node that is itself a stop is the longest stop ending here; otherwise inherit the suffix's.
      if (n.match_stop < 0) {
        n.match_len = nodes_[size_t(n.fail)].match_len;
        n.match_stop = nodes_[size_t(n.fail)].match_stop;
      }
      queue.push_back(next);
    }
  }
}

bool stop_matcher::push(std::string_view piece, std::string& out) {
  if (stopped()) return true;

  // Scanning the new bytes only: held_ is already summarized by state_.
  const size_t held_before = held_.size();
  for (size_t i = 0; i < piece.size(); ++i) {
    state_ = step(state_, static_cast<unsigned char>(piece[i]));
    const node& n = nodes_[size_t(state_)];
    if (n.match_len > 0) {
      // The first byte where any stop ends; match_len picks the longest one, i.e. the earliest cut.
      const size_t stop_end = held_before + i + 1;
      append_prefix(held_, piece, stop_end - size_t(n.match_len), out);
      matched_stop_ = n.match_stop;
      held_.clear();
      state_ = 0;
      return true;
    }
  }

  // Everything before the longest suffix that may still grow into a stop string is final.
  const size_t keep = size_t(nodes_[size_t(state_)].depth);
  const size_t emit = held_before + piece.size() - keep;
  append_prefix(held_, piece, emit, out);
  if (emit <= held_before) {
    held_.erase(0, emit);
    held_.append(piece);
  } else {
    held_.assign(piece.substr(emit - held_before));
  }
  return false;
}

void stop_matcher::flush(std::string& out) {
  if (stopped()) return;
  out.append(held_);
  held_.clear();
  state_ = 0;
}

}  // namespace inflight::engine
