// A test-only backend around a real one that makes greedy decoding write a chosen text: after each
// forward pass it rewrites the logits so that the next token of a script (then end of sequence) is the
// only likely one. The server's handling of a given model output (tool-call parsing, streaming splits)
// can then be tested without hoping a small model writes it. One sequence at a time: a prefill, or a
// decode chunk that does not continue the script, starts the script over.
#pragma once

#include <limits>
#include <memory>
#include <vector>

#include "inflight/backend.hpp"

namespace inflight::test {

class script_backend final : public backend {
 public:
  script_backend(std::unique_ptr<backend> inner, std::vector<int32_t> script, int32_t end_token)
      : inner_(std::move(inner)), script_(std::move(script)), end_token_(end_token) {}
  const model_config& config() const override { return inner_->config(); }
  kv_cache_geometry kv_geometry() const override { return inner_->kv_geometry(); }
  int32_t max_step_tokens() const override { return inner_->max_step_tokens(); }
  int32_t max_step_sequences() const override { return inner_->max_step_sequences(); }
  void forward(std::span<const sequence_chunk> chunks, std::span<float> logits) override {
    inner_->forward(chunks, logits);
    const size_t vocab = size_t(config().vocab_size);
    size_t row = 0;
    for (const sequence_chunk& chunk : chunks) {
      if (!chunk.compute_logits) continue;
      const int32_t end = chunk.start_position + int32_t(chunk.tokens.size());
      const bool continues = next_ > 0 && next_ <= script_.size() && chunk.tokens.size() == 1 &&
                             chunk.tokens[0] == script_[next_ - 1] && end == last_end_ + 1;
      if (!continues) next_ = 0;
      const int32_t target = next_ < script_.size() ? script_[next_] : end_token_;
      ++next_;
      last_end_ = end;
      std::span<float> row_logits = logits.subspan(row++ * vocab, vocab);
      for (float& logit : row_logits) logit = -1e4f;
      row_logits[size_t(target)] = 1e4f;
    }
  }

 private:
  std::unique_ptr<backend> inner_;
  std::vector<int32_t> script_;
  int32_t end_token_;
  size_t next_ = 0;  // the script's next token
  int32_t last_end_ = 0;
};

}  // namespace inflight::test
