// Stop strings over a token stream (OpenAI `stop`, vLLM semantics): the output is cut *before* the
// first stop string and everything after it is discarded, so the stop text itself is never shown.
//
// Text arrives as one piece per generated token, and a stop string may straddle pieces ("\n", "\nUs",
// "er:" for "\n\nUser:"). The matcher therefore holds back exactly the longest suffix of the text seen
// so far that is still a prefix of some stop string — at most (longest stop - 1) bytes — and emits
// everything before it at once. An Aho-Corasick automaton over the stop strings tracks that suffix in
// amortized O(1) per byte, so nothing already emitted is ever scanned again.
//
// Several stops: the one that *ends* first in the stream wins (it is the first one a streaming client
// could have seen), and of those ending at the same byte the longest, i.e. the earliest cut.
//
// UTF-8: held-back text always equals a prefix of a stop string, so its first byte is the first byte of
// a (valid UTF-8) stop string — never a continuation byte. With valid UTF-8 pieces the cut therefore
// falls on a character boundary, and no emitted chunk ends inside a character.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace inflight::engine {

class stop_matcher {
 public:
  // Throws std::invalid_argument naming the problem for an empty stop string. No stops: a pass-through.
  explicit stop_matcher(std::vector<std::string> stop_strings);

  // Appends `piece`; appends to `out` the text that can no longer be part of a stop string.
  // Returns true when a stop string completed: `out` then has received everything before it, and the
  // matcher is done (later pushes append nothing and return true).
  bool push(std::string_view piece, std::string& out);
  // End of stream without a stop: appends the held-back tail (nothing once stopped).
  void flush(std::string& out);

  bool stopped() const { return matched_stop_ >= 0; }
  // Which stop string matched ("" if none).
  const std::string& matched_stop() const;
  const std::vector<std::string>& stop_strings() const { return stop_strings_; }
  // The bytes currently held back: a prefix of some stop string, shorter than the longest one.
  std::string_view held_back() const { return held_; }

 private:
  // One trie node: the stop-string prefix spelled by the path from the root.
  struct node {
    std::vector<std::pair<unsigned char, int32_t>> children;  // few per node: a linear scan beats a map
    int32_t fail = 0;        // node of the longest proper suffix that is also a prefix of some stop
    int32_t depth = 0;       // length of the prefix this node spells
    int32_t match_len = 0;   // longest stop that is a suffix of this prefix (0: none)
    int32_t match_stop = -1; // its index in stop_strings_
  };

  int32_t child(int32_t state, unsigned char byte) const;
  int32_t step(int32_t state, unsigned char byte) const;
  void build();

  std::vector<std::string> stop_strings_;
  std::vector<node> nodes_;  // nodes_[0] is the root (empty prefix)
  int32_t state_ = 0;        // invariant: nodes_[state_].depth == held_.size()
  std::string held_;
  int32_t matched_stop_ = -1;
};

}  // namespace inflight::engine
