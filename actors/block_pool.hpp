// The mechanics under kv_cache_manager (STYLE.md #1, vLLM V1 core/block_pool.py): block ids, ref counts,
// a free list, hash -> block for cached full blocks and an LRU of evictable ones. No policy lives here:
// the pool never decides *whose* blocks to take, only which physical block comes next.
//
// Every block is in exactly one of three states, so the counts always sum to num_blocks:
//
//   used    ref_count > 0                  (held by one or more sequences; may also carry a hash)
//   cached  ref_count == 0, carries a hash (on the LRU: contents reusable until evicted)
//   free    ref_count == 0, no hash        (on the free list)
//
// Invariant: a block carries a hash exactly when the hash map points at it (has_hash(b) <=> map[hash(b)] == b),
// so there is never a cached block that no lookup can find.
#pragma once

#include <cstddef>
#include <cstdint>
#include <unordered_map>
#include <vector>

namespace inflight::engine {

class block_pool {
 public:
  explicit block_pool(int32_t num_blocks);

  int32_t num_blocks() const { return num_blocks_; }
  int32_t num_free_blocks() const { return int32_t(free_list_.size()); }
  int32_t num_cached_blocks() const { return num_cached_; }
  int32_t num_used_blocks() const { return num_blocks_ - num_free_blocks() - num_cached_; }
  // What allocate() can still hand out: truly free blocks plus evictable cached ones.
  int32_t num_available_blocks() const { return num_free_blocks() + num_cached_; }

  // Takes a block with ref count 1. A truly free block first, so cached prefixes survive as long as
  // possible; otherwise evicts the least recently released cached block and drops its hash.
  // Precondition: num_available_blocks() > 0 (the caller checks for the whole request up front).
  int32_t allocate();

  // A prefix hit: ref count + 1; a block at ref count 0 leaves the LRU (it is no longer evictable).
  void touch(int32_t block);

  // Ref count - 1. At 0 a block with a hash goes to the LRU tail (most recently released), one without
  // back to the free list.
  void release(int32_t block);

  // The block holding `hash`, or -1.
  int32_t find_cached(uint64_t hash) const;

  // Gives a referenced block without a hash the identity `hash`. Returns false and changes nothing when
  // another block already holds that hash: the existing mapping wins (no dedup swapping, as vLLM).
  bool set_hash(int32_t block, uint64_t hash);

  // Forgets the block's hash (its mapping goes with it); an unreferenced block moves from the LRU to the
  // free list. For an entry the manager knows no lookup can accept any more.
  void drop_hash(int32_t block);

  int32_t ref_count(int32_t block) const { return ref_count_[std::size_t(block)]; }
  bool has_hash(int32_t block) const { return has_hash_[std::size_t(block)] != 0; }

 private:
  void lru_push_back(int32_t block);
  void lru_remove(int32_t block);

  int32_t num_blocks_;
  int32_t num_cached_ = 0;
  std::vector<int32_t> ref_count_;
  std::vector<uint64_t> hash_;
  std::vector<uint8_t> has_hash_;  // bytes, not vector<bool>: a plain load on the hot path
  // Stack of free block ids, filled so that a fresh pool hands out 0, 1, 2, ... (deterministic tests).
  std::vector<int32_t> free_list_;
  // Intrusive doubly linked LRU over block ids; index num_blocks_ is the sentinel (head = next of it,
  // tail = prev of it), so insert and unlink are O(1) with no branches on empty ends and no allocation.
  std::vector<int32_t> lru_prev_;
  std::vector<int32_t> lru_next_;
  // Reserved for num_blocks entries at construction, so it never rehashes; a node is still allocated
  // per insert (std::unordered_map), which is the only allocation after construction.
  std::unordered_map<uint64_t, int32_t> block_of_hash_;
};

}  // namespace inflight::engine
