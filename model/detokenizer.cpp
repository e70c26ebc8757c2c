#include "inflight/detokenizer.hpp"

#include <stdexcept>
#include <string_view>

#include "inflight/tokenizer.hpp"
#include "unicode_text.hpp"

namespace inflight {
namespace {

constexpr std::string_view replacement_utf8 = "\xEF\xBF\xBD";

}  // namespace

incremental_detokenizer::incremental_detokenizer(std::shared_ptr<const tokenizer> tok, bool skip_special)
    : tok_(std::move(tok)), skip_special_(skip_special) {
  if (!tok_) throw std::invalid_argument("incremental_detokenizer: null tokenizer");
}

std::string incremental_detokenizer::push(int32_t id) {
  std::string out;
  push(id, out);
  return out;
}

void incremental_detokenizer::push(int32_t id, std::string& out) {
  const std::string& bytes = tok_->token_bytes(id);  // throws for a bad id before any state changes
  if (skip_special_ && tok_->is_special(id)) return;
  append_bytes(bytes.data(), bytes.size(), out);
}

std::string incremental_detokenizer::flush() {
  std::string out;
  flush(out);
  return out;
}

void incremental_detokenizer::flush(std::string& out) {
  // What is pending is a valid prefix cut short by the end of the stream: one maximal subpart.
  if (pending_size_ > 0) out.append(replacement_utf8);
  pending_size_ = 0;
}

void incremental_detokenizer::append_bytes(const char* data, size_t size, std::string& out) {
  size_t pos = 0;

  // First complete (or give up on) the character held back from earlier tokens, byte by byte.
  while (pending_size_ > 0 && pos < size) {
    pending_[pending_size_++] = data[pos];
    const auto d = unicode::decode_utf8(std::string_view(pending_, pending_size_), 0);
    if (d.valid) {
      out.append(pending_, pending_size_);
      pending_size_ = 0;
      ++pos;
    } else if (d.truncated) {
      ++pos;  // still a valid prefix: keep waiting
    } else {
      // The new byte cannot continue the sequence: the held bytes are one invalid subpart, and the new
      // byte starts afresh below.
      out.append(replacement_utf8);
      pending_size_ = 0;
    }
  }

  const std::string_view view(data, size);
  size_t run_begin = pos;  // valid text is copied in runs, not character by character
  while (pos < size) {
    const auto d = unicode::decode_utf8(view, pos);
    if (d.valid) {
      pos += d.length;
      continue;
    }
    out.append(view.substr(run_begin, pos - run_begin));
    if (d.truncated) {  // an incomplete character at the end of this token: hold it back
      for (size_t k = pos; k < size; ++k) pending_[pending_size_++] = data[k];
      return;
    }
    out.append(replacement_utf8);
    pos += d.length;
    run_begin = pos;
  }
  out.append(view.substr(run_begin, pos - run_begin));
}

}  // namespace inflight
