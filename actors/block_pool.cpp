#include "block_pool.hpp"

#include <cassert>
#include <stdexcept>

namespace inflight::engine {

block_pool::block_pool(int32_t num_blocks)
    : num_blocks_(num_blocks),
      ref_count_(size_t(num_blocks > 0 ? num_blocks : 0), 0),
      hash_(ref_count_.size(), 0),
      has_hash_(ref_count_.size(), 0),
      lru_prev_(ref_count_.size() + 1),
      lru_next_(ref_count_.size() + 1) {
  if (num_blocks <= 0) throw std::invalid_argument("block_pool: num_blocks must be positive");
  free_list_.reserve(size_t(num_blocks));
  for (int32_t block = num_blocks - 1; block >= 0; --block) free_list_.push_back(block);
  lru_prev_[size_t(num_blocks)] = lru_next_[size_t(num_blocks)] = num_blocks;  // empty: sentinel to itself
  block_of_hash_.reserve(size_t(num_blocks));
}

int32_t block_pool::allocate() {
  assert(num_available_blocks() > 0);
  int32_t block;
  if (!free_list_.empty()) {
    block = free_list_.back();
    free_list_.pop_back();
  } else {
    block = lru_next_[size_t(num_blocks_)];  // LRU head: released longest ago
    lru_remove(block);
    // Its contents are about to be overwritten: no lookup may find it any more.
    block_of_hash_.erase(hash_[size_t(block)]);
    has_hash_[size_t(block)] = 0;
  }
  ref_count_[size_t(block)] = 1;
  return block;
}

void block_pool::touch(int32_t block) {
  if (ref_count_[size_t(block)]++ == 0) {
    // Only cached blocks can be found at ref count 0 (free ones carry no hash), so this one is on the LRU.
    assert(has_hash(block));
    lru_remove(block);
  }
}

void block_pool::release(int32_t block) {
  assert(ref_count_[size_t(block)] > 0);
  if (--ref_count_[size_t(block)] > 0) return;
  if (has_hash(block)) {
    lru_push_back(block);
  } else {
    free_list_.push_back(block);
  }
}

int32_t block_pool::find_cached(uint64_t hash) const {
  const auto found = block_of_hash_.find(hash);
  return found == block_of_hash_.end() ? -1 : found->second;
}

bool block_pool::set_hash(int32_t block, uint64_t hash) {
  assert(ref_count_[size_t(block)] > 0 && !has_hash(block));
  if (!block_of_hash_.try_emplace(hash, block).second) return false;
  hash_[size_t(block)] = hash;
  has_hash_[size_t(block)] = 1;
  return true;
}

void block_pool::drop_hash(int32_t block) {
  assert(has_hash(block));
  block_of_hash_.erase(hash_[size_t(block)]);
  has_hash_[size_t(block)] = 0;
  if (ref_count_[size_t(block)] == 0) {
    lru_remove(block);
    free_list_.push_back(block);
  }
}

void block_pool::lru_push_back(int32_t block) {
  const int32_t sentinel = num_blocks_;
  const int32_t tail = lru_prev_[size_t(sentinel)];
  lru_next_[size_t(tail)] = block;
  lru_prev_[size_t(block)] = tail;
  lru_next_[size_t(block)] = sentinel;
  lru_prev_[size_t(sentinel)] = block;
  ++num_cached_;
}

void block_pool::lru_remove(int32_t block) {
  const int32_t prev = lru_prev_[size_t(block)];
  const int32_t next = lru_next_[size_t(block)];
  lru_next_[size_t(prev)] = next;
  lru_prev_[size_t(next)] = prev;
  --num_cached_;
}

}  // namespace inflight::engine
