#include "inflight/step_layout.hpp"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace inflight {

step_layout::step_layout(const step_limits& limits) : limits_(limits) {
  if (limits.max_tokens <= 0 || limits.max_sequences <= 0 || limits.geometry.block_size <= 0 ||
      limits.max_blocks_per_sequence < 0) {
    throw std::invalid_argument("step_layout: max_tokens, max_sequences and block_size must be > 0");
  }
  const size_t tokens = size_t(limits.max_tokens), sequences = size_t(limits.max_sequences);
  token_ids_.resize(tokens);
  positions_.resize(tokens);
  token_chunk_.resize(tokens);
  slots_.resize(tokens);
  sorted_slots_.resize(tokens);
  logits_tokens_.resize(sequences);
  query_start_loc_.resize(sequences + 1);
  seq_lens_.resize(sequences);
  block_tables_.resize(sequences * size_t(limits.max_blocks_per_sequence));
}

void step_layout::prepare(std::span<const sequence_chunk> step, int64_t logits_capacity) {
  num_tokens_ = num_sequences_ = num_logits_ = max_query_len_ = max_seq_len_ = 0;
  if (step.size() > size_t(limits_.max_sequences)) {
    throw std::invalid_argument("step has " + std::to_string(step.size()) + " sequences, more than " +
                                std::to_string(limits_.max_sequences));
  }
  const int32_t block_size = limits_.geometry.block_size;
  int32_t count = 0, outputs = 0;
  query_start_loc_[0] = 0;
  for (size_t c = 0; c < step.size(); ++c) {
    const sequence_chunk& chunk = step[c];
    const int64_t n = int64_t(chunk.tokens.size());
    if (n == 0) throw std::invalid_argument("step chunk " + std::to_string(c) + " has no tokens");
    if (count + n > limits_.max_tokens) {
      throw std::invalid_argument("step carries more than " + std::to_string(limits_.max_tokens) + " tokens");
    }
    const int64_t end = int64_t(chunk.start_position) + n;
    if (chunk.start_position < 0 || end > limits_.context_length) {
      throw std::invalid_argument("step chunk " + std::to_string(c) + " runs past the context length " +
                                  std::to_string(limits_.context_length));
    }
    if (end > int64_t(chunk.block_table.size()) * block_size) {
      throw std::invalid_argument("step chunk " + std::to_string(c) + ": block table does not cover position " +
                                  std::to_string(end - 1));
    }
    const int64_t blocks_used = (end + block_size - 1) / block_size;
    if (limits_.max_blocks_per_sequence > 0 && blocks_used > limits_.max_blocks_per_sequence) {
      throw std::invalid_argument("step chunk " + std::to_string(c) + " needs " + std::to_string(blocks_used) +
                                  " blocks, more than " + std::to_string(limits_.max_blocks_per_sequence));
    }
    for (int64_t block = 0; block < blocks_used; ++block) {
      const int32_t id = chunk.block_table[size_t(block)];
      if (id < 0 || id >= limits_.geometry.num_blocks) {
        throw std::invalid_argument("step chunk " + std::to_string(c) + ": block id " + std::to_string(id) +
                                    " out of range");
      }
    }
    for (int64_t i = 0; i < n; ++i) {
      const int32_t token = chunk.tokens[size_t(i)];
      if (token < 0 || token >= limits_.vocab_size) {
        throw std::invalid_argument("token id " + std::to_string(token) + " out of range");
      }
      const int32_t position = chunk.start_position + int32_t(i);
      token_ids_[size_t(count)] = token;
      positions_[size_t(count)] = position;
      token_chunk_[size_t(count)] = int32_t(c);
      slots_[size_t(count)] = int64_t(chunk.block_table[size_t(position / block_size)]) * block_size +
                              position % block_size;
      ++count;
    }
    if (chunk.compute_logits) logits_tokens_[size_t(outputs++)] = count - 1;
    query_start_loc_[c + 1] = count;
    seq_lens_[c] = int32_t(end);
    max_query_len_ = std::max(max_query_len_, int32_t(n));
    max_seq_len_ = std::max(max_seq_len_, int32_t(end));
    if (limits_.max_blocks_per_sequence > 0) {
      // Only the blocks in use: the columns past them are never read (kernels stop at seq_lens), and
      // clearing a whole row of a long-context model's table would cost more than the step's tokens.
      std::copy_n(chunk.block_table.begin(), blocks_used, block_tables_.data() + c * size_t(limits_.max_blocks_per_sequence));
    }
  }
  if (logits_capacity >= 0 && int64_t(outputs) * limits_.vocab_size > logits_capacity) {
    throw std::invalid_argument("logits buffer holds " + std::to_string(logits_capacity) + " values; the step needs " +
                                std::to_string(outputs) + " x " + std::to_string(limits_.vocab_size));
  }
  // Two tokens writing one KV slot (a block listed twice, or two chunks of one sequence) would race and
  // corrupt attention: refuse the step.
  std::copy_n(slots_.begin(), count, sorted_slots_.begin());
  std::sort(sorted_slots_.begin(), sorted_slots_.begin() + count);
  if (auto twice = std::adjacent_find(sorted_slots_.begin(), sorted_slots_.begin() + count);
      twice != sorted_slots_.begin() + count) {
    throw std::invalid_argument("two tokens of the step write the same KV slot (block " +
                                std::to_string(*twice / block_size) + ", offset " + std::to_string(*twice % block_size) + ")");
  }
  num_tokens_ = count;
  num_sequences_ = int32_t(step.size());
  num_logits_ = outputs;
}

}  // namespace inflight
