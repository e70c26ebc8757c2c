// Streaming detokenization: token ids in, valid UTF-8 text out, one token at a time.
//
// A byte-level BPE token can end in the middle of a UTF-8 character (emoji and CJK are often split
// across two or three tokens), so the bytes of the last, incomplete character are held back until a
// later token completes them. Bytes that can no longer become a valid character are emitted as one
// U+FFFD per maximal invalid subpart (the Unicode-recommended substitution), and only once that is
// certain; flush() at the end of the stream turns a still-incomplete tail into U+FFFD.
//
// The concatenation of every push() and the final flush() equals unicode::to_valid_utf8(decode(ids)).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace inflight {

class tokenizer;

class incremental_detokenizer {
 public:
  // `skip_special`: control/unknown/unused tokens produce no text (as tokenizer::decode's flag).
  explicit incremental_detokenizer(std::shared_ptr<const tokenizer> tok, bool skip_special = false);

  // The text completed by `id` (possibly empty). Throws std::out_of_range for an id outside the vocabulary.
  std::string push(int32_t id);
  // Appends that text to `out` instead: no allocation beyond `out`'s own growth.
  void push(int32_t id, std::string& out);

  // End of stream: the held-back bytes, as U+FFFD (empty when nothing is pending). Resets the state.
  std::string flush();
  void flush(std::string& out);

  // Forgets held-back bytes without emitting them (e.g. a new stream on the same object).
  void reset() { pending_size_ = 0; }
  // Bytes currently held back (0..3).
  size_t pending_bytes() const { return pending_size_; }
  bool skip_special() const { return skip_special_; }

 private:
  void append_bytes(const char* data, size_t size, std::string& out);

  std::shared_ptr<const tokenizer> tok_;
  bool skip_special_ = false;
  // An incomplete UTF-8 sequence is at most 3 bytes (a 4-byte character missing its last byte).
  char pending_[4] = {};
  size_t pending_size_ = 0;
};

}  // namespace inflight
