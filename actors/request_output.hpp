// One request's text output: generated token ids in, text deltas safe to stream out.
//
// Two stages, each holding back only what it must:
//   incremental_detokenizer  bytes of a UTF-8 character split across tokens (at most 3)
//   stop_matcher             text that may still be the start of a stop string (< longest stop)
// so a client never sees half a character nor any part of a stop string, and every delta is valid UTF-8.
// The request actor owns one of these; it has no CAF in it, so tests drive it with a real tokenizer.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "inflight/detokenizer.hpp"
#include "stop_matcher.hpp"

namespace inflight {
class tokenizer;
}

namespace inflight::engine {

class request_output {
 public:
  // Throws std::invalid_argument for a null tokenizer or an empty stop string.
  request_output(std::shared_ptr<const inflight::tokenizer> tok, std::vector<std::string> stop_strings,
                 bool skip_special_tokens = true);

  // One generated token: appends to `delta` the text now safe to show. Returns true when a stop string
  // completed (the request must finish with finish_reason "stop"; the stop text is not emitted); later
  // calls then append nothing and return true. Throws std::out_of_range for an id outside the vocabulary.
  bool on_token(int32_t token, std::string& delta);
  // The request finished for another reason (length, stop token, cancel, deadline): appends what was held
  // back (the detokenizer's flush fed through the stop matcher, then the matcher's tail). Should that
  // flushed text itself complete a stop string (one containing U+FFFD), stopped() turns true.
  void finish(std::string& delta);

  // Everything emitted so far (the concatenation of all deltas).
  const std::string& text() const { return text_; }
  bool stopped() const { return stops_.stopped(); }
  // Which stop string ended the request ("" if none).
  const std::string& matched_stop() const { return stops_.matched_stop(); }

 private:
  inflight::incremental_detokenizer detok_;
  stop_matcher stops_;
  std::string piece_;  // one token's text, reused to avoid an allocation per token
  std::string text_;
};

}  // namespace inflight::engine
