// One step's chunks checked and flattened into the per-token and per-sequence arrays a backend's kernels
// read: token ids, positions, KV slots, which chunk each token belongs to, which tokens want logits, and
// (for the CUDA kernels) cu_seqlens-style query offsets, KV lengths and a dense block-table matrix.
// Shared by the CPU and CUDA backends, so both refuse a malformed step with the same message.
//
// Sized once for the backend's limits; prepare() allocates nothing.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "inflight/backend.hpp"

namespace inflight {

struct step_limits {
  int32_t max_tokens = 0;      // tokens per step, summed over chunks
  int32_t max_sequences = 0;   // chunks per step
  int32_t context_length = 0;  // positions per sequence
  int32_t vocab_size = 0;
  kv_cache_geometry geometry;
  // Columns of the dense block table (0: not built; the CPU backend reads chunk.block_table itself).
  int32_t max_blocks_per_sequence = 0;
};

class step_layout {
 public:
  explicit step_layout(const step_limits& limits);

  // Checks the step and fills the arrays below. Throws std::invalid_argument naming the problem: too many
  // tokens or sequences, an empty chunk, a chunk past the context, a block table that does not cover its
  // positions or holds an out-of-range block, a token id out of range, two tokens writing one KV slot, or
  // (when `logits_capacity` >= 0) more logits rows than fit in logits_capacity values.
  void prepare(std::span<const sequence_chunk> step, int64_t logits_capacity = -1);

  int32_t num_tokens() const { return num_tokens_; }
  int32_t num_sequences() const { return num_sequences_; }
  int32_t num_logits() const { return num_logits_; }
  // True when every chunk is one token (a pure decode step).
  bool decode_only() const { return num_tokens_ == num_sequences_; }
  int32_t max_query_len() const { return max_query_len_; }
  int32_t max_seq_len() const { return max_seq_len_; }

  // Per token, [0, num_tokens()).
  std::span<const int32_t> token_ids() const { return {token_ids_.data(), size_t(num_tokens_)}; }
  std::span<const int32_t> positions() const { return {positions_.data(), size_t(num_tokens_)}; }
  std::span<const int64_t> slots() const { return {slots_.data(), size_t(num_tokens_)}; }  // block * size + offset
  std::span<const int32_t> token_chunk() const { return {token_chunk_.data(), size_t(num_tokens_)}; }
  // Per logits row, [0, num_logits()): the token whose hidden state gives the row (its chunk's last).
  std::span<const int32_t> logits_tokens() const { return {logits_tokens_.data(), size_t(num_logits_)}; }
  // Per sequence: query_start_loc has num_sequences() + 1 entries (the chunk's tokens are rows
  // [qsl[s], qsl[s+1])); seq_lens is the KV length including this step's tokens.
  std::span<const int32_t> query_start_loc() const { return {query_start_loc_.data(), size_t(num_sequences_) + 1}; }
  std::span<const int32_t> seq_lens() const { return {seq_lens_.data(), size_t(num_sequences_)}; }
  // num_sequences() rows of max_blocks_per_sequence columns; a row's entries past its sequence's blocks
  // are unspecified (the kernels stop at seq_lens).
  std::span<const int32_t> block_tables() const {
    return {block_tables_.data(), size_t(num_sequences_) * size_t(limits_.max_blocks_per_sequence)};
  }

 private:
  step_limits limits_;
  std::vector<int32_t> token_ids_, positions_, token_chunk_, logits_tokens_, query_start_loc_, seq_lens_, block_tables_;
  std::vector<int64_t> slots_, sorted_slots_;
  int32_t num_tokens_ = 0, num_sequences_ = 0, num_logits_ = 0, max_query_len_ = 0, max_seq_len_ = 0;
};

}  // namespace inflight
