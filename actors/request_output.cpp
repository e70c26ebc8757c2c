#include "request_output.hpp"

#include "inflight/tokenizer.hpp"

namespace inflight::engine {

request_output::request_output(std::shared_ptr<const inflight::tokenizer> tok,
                               std::vector<std::string> stop_strings, bool skip_special_tokens)
    : detok_(std::move(tok), skip_special_tokens), stops_(std::move(stop_strings)) {}

bool request_output::on_token(int32_t token, std::string& delta) {
  if (stops_.stopped()) return true;
  piece_.clear();
  detok_.push(token, piece_);
  const size_t before = delta.size();
  const bool stopped = stops_.push(piece_, delta);
  text_.append(delta, before);
  return stopped;
}

void request_output::finish(std::string& delta) {
  if (stops_.stopped()) return;  // the stop already discarded everything after it
  piece_.clear();
  detok_.flush(piece_);
  const size_t before = delta.size();
  if (!stops_.push(piece_, delta)) stops_.flush(delta);
  text_.append(delta, before);
}

}  // namespace inflight::engine
