// Who owns which KV block: per-sequence block tables over a shared pool, with automatic prefix caching.
//
// Three layers, as vLLM V1 (STYLE.md #1): the scheduler decides who runs; this manager answers
// computed_prefix / allocate_slots / free; the block_pool (block_pool.hpp) does the mechanics (free list,
// ref counts, hash -> block, LRU of evictable cached blocks). None of them includes CAF or CUDA: the
// kv_manager actor is a thin shell over one instance.
//
// Prefix caching: a *full* block is identified by hash(parent block's hash, the block's tokens), so equal
// hashes mean equal whole prefixes. Full blocks of a sequence are registered once computed; a later
// sequence whose prompt starts with the same tokens attaches those blocks (ref count + 1) and skips their
// prefill. A freed cached block stays in the pool's LRU with its contents until the space is needed.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

namespace inflight::engine {

using sequence_id = uint64_t;

struct kv_cache_stats {
  int32_t num_blocks = 0;          // pool size
  int32_t used_blocks = 0;         // referenced by at least one sequence
  int32_t cached_blocks = 0;       // unreferenced but holding a reusable prefix (evictable, LRU)
  int32_t free_blocks = 0;         // unreferenced and empty; free + cached + used == num_blocks
  int64_t prefix_queried_tokens = 0;  // prompt tokens looked up in the prefix cache
  int64_t prefix_hit_tokens = 0;      // of those, found cached
  double prefix_hit_rate() const {
    return prefix_queried_tokens ? double(prefix_hit_tokens) / double(prefix_queried_tokens) : 0.0;
  }
};

class kv_cache_manager {
 public:
  kv_cache_manager(int32_t num_blocks, int32_t block_size, bool enable_prefix_caching);
  ~kv_cache_manager();
  kv_cache_manager(const kv_cache_manager&) = delete;
  kv_cache_manager& operator=(const kv_cache_manager&) = delete;

  int32_t block_size() const;

  // For a sequence not yet holding blocks: attaches the longest run of cached full blocks that match the
  // start of `prompt` and returns how many tokens they cover (a multiple of block_size). Never the whole
  // prompt: at least its last token is left to compute, so that the step produces logits.
  // Returns 0 when prefix caching is off.
  int32_t computed_prefix(sequence_id seq, std::span<const int32_t> prompt);

  // Makes the sequence's block table cover `num_tokens` positions in all, taking blocks from the pool
  // (evicting LRU cached blocks if needed). Returns false and changes nothing when the pool cannot supply
  // them: the scheduler then preempts someone and retries.
  bool allocate_slots(sequence_id seq, int32_t num_tokens);

  // Registers the sequence's full blocks among its first `num_computed` tokens in the prefix cache
  // (`tokens` holds at least that many: prompt then generated ids). Cheap to call every step.
  void cache_full_blocks(sequence_id seq, std::span<const int32_t> tokens, int32_t num_computed);

  // Releases every block of the sequence (cached ones become evictable). Unknown ids are ignored.
  void free(sequence_id seq);

  // The sequence's physical blocks in position order (empty for an unknown sequence).
  std::span<const int32_t> block_table(sequence_id seq) const;

  kv_cache_stats stats() const;

 private:
  friend struct kv_cache_manager_test_hook;
  struct impl;
  std::unique_ptr<impl> impl_;
};

// Test seam, for the unit tests only: swapping the block hash (to force collisions and show that the
// stored tokens and parent link still rule out a false prefix hit) and reading a block's ref count (to check
// the sharing invariants). Swap the hash on a fresh manager, before anything is cached.
struct kv_cache_manager_test_hook {
  using hash_function = uint64_t (*)(uint64_t parent_hash, std::span<const int32_t> block_tokens);
  static void set_hash_function(kv_cache_manager& manager, hash_function function);
  static int32_t ref_count(const kv_cache_manager& manager, int32_t block);
};

}  // namespace inflight::engine
