// kv_cache_manager over block_pool: per-sequence block tables and the prefix-cache policy (what a block's
// identity is, when a hit counts, when to register). The pool below only moves block ids around.
//
// A sequence's table, with block_size 4, after computed_prefix found 2 cached blocks and allocate_slots(13):
//
//   positions  0..3   4..7   8..11  12..15
//   table     [ 17  |  5   |  9   |  2   ]     17, 5: attached prefix hits (shared, ref count >= 2 possible)
//              \_____ _____/ \_____ _____/     9, 2 : taken from the pool for this sequence alone
//                    v             v
//               already computed   to compute (block 2 only partly filled until position 15 is written)
//
// Identity of a full block i: h_i = hash(h_{i-1}, tokens of block i), h_{-1} = a fixed root. Equal hashes
// are a strong hint, not proof: a 64-bit hash can collide. So every cached block also keeps its tokens and a
// link to the block it was chained to (parent id plus that parent's registration generation), and a hit
// must match all three. By induction along the walk, a matched block holds exactly the prompt's tokens
// *and* sits behind exactly the already matched prefix, so a collision costs a miss, never a false hit.
#include "kv_cache_manager.hpp"

#include <algorithm>
#include <cassert>
#include <stdexcept>
#include <unordered_map>

#include "block_pool.hpp"

namespace inflight::engine {

namespace {

constexpr uint64_t root_hash = 0x6a09e667f3bcc908ull;  // parent hash of a prompt's first block
constexpr int32_t root_block = -1;                     // parent link of a prompt's first block

uint64_t splitmix64_finalize(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return x;
}

// FNV-1a over the parent hash's and the tokens' bytes, then a splitmix64 finalizer: FNV-1a alone mixes the
// last bytes poorly into the high bits, and unordered_map buckets on the low ones, the finalizer fixes both.
uint64_t default_block_hash(uint64_t parent_hash, std::span<const int32_t> block_tokens) {
  uint64_t h = 0xcbf29ce484222325ull;
  auto mix = [&h](uint64_t value, int bytes) {
    for (int i = 0; i < bytes; ++i) {
      h ^= (value >> (8 * i)) & 0xffu;
      h *= 0x100000001b3ull;
    }
  };
  mix(parent_hash, 8);
  for (const int32_t token : block_tokens) mix(uint32_t(token), 4);
  return splitmix64_finalize(h);
}

struct sequence_state {
  std::vector<int32_t> blocks;
  // blocks[0, num_registered) are known to the prefix cache (attached hits or registered by
  // cache_full_blocks); the fields below describe the last of them, to chain the next one.
  int32_t num_registered = 0;
  uint64_t last_hash = root_hash;
  // The block a lookup walk finds for that prefix: the sequence's own block, or the block that already held
  // the hash when ours was registered (ours then stays unhashed, no dedup swapping).
  int32_t last_canonical_block = root_block;
  uint64_t last_canonical_generation = 0;
  // A genuine collision left the chain without a findable block: later blocks could never be hit.
  bool registration_stopped = false;
};

}  // namespace

struct kv_cache_manager::impl {
  impl(int32_t num_blocks, int32_t block_size, bool enable_prefix_caching)
      : pool(num_blocks),
        block_size(block_size),
        enable_prefix_caching(enable_prefix_caching),
        block_tokens(enable_prefix_caching ? size_t(num_blocks) * size_t(block_size) : 0),
        parent_block(enable_prefix_caching ? size_t(num_blocks) : 0, root_block),
        parent_generation(parent_block.size(), 0),
        generation(parent_block.size(), 0) {}

  std::span<const int32_t> tokens_of(int32_t block) const {
    return {block_tokens.data() + size_t(block) * size_t(block_size), size_t(block_size)};
  }

  // Whether cached `block` is the block that follows (parent, parent_gen) with exactly `tokens`.
  bool holds(int32_t block, int32_t parent, uint64_t parent_gen, std::span<const int32_t> tokens) const {
    return parent_block[size_t(block)] == parent && parent_generation[size_t(block)] == parent_gen &&
           std::equal(tokens.begin(), tokens.end(), tokens_of(block).begin());
  }

  // Whether a cached block's parent link points at an identity that no longer exists (the parent was
  // evicted, maybe re-registered since): no walk can accept it, so its hash entry is dead weight.
  bool parent_link_stale(int32_t block) const {
    const int32_t parent = parent_block[size_t(block)];
    return parent != root_block &&
           (!pool.has_hash(parent) || generation[size_t(parent)] != parent_generation[size_t(block)]);
  }

  block_pool pool;
  int32_t block_size;
  bool enable_prefix_caching;
  kv_cache_manager_test_hook::hash_function hash = default_block_hash;
  // Per block, valid while the block carries a hash: its tokens (num_blocks * block_size, preallocated),
  // its parent link, and a generation bumped at every registration so that a link to an evicted and
  // reused parent is recognisably stale.
  std::vector<int32_t> block_tokens;
  std::vector<int32_t> parent_block;
  std::vector<uint64_t> parent_generation;
  std::vector<uint64_t> generation;
  // One node per live sequence (allocated on its first block, freed with it).
  std::unordered_map<sequence_id, sequence_state> sequences;
  int64_t prefix_queried_tokens = 0;
  int64_t prefix_hit_tokens = 0;
};

kv_cache_manager::kv_cache_manager(int32_t num_blocks, int32_t block_size, bool enable_prefix_caching) {
  if (block_size <= 0) throw std::invalid_argument("kv_cache_manager: block_size must be positive");
  impl_ = std::make_unique<impl>(num_blocks, block_size, enable_prefix_caching);
}

kv_cache_manager::~kv_cache_manager() = default;

int32_t kv_cache_manager::block_size() const { return impl_->block_size; }

int32_t kv_cache_manager::computed_prefix(sequence_id seq, std::span<const int32_t> prompt) {
  impl& m = *impl_;
  // As vLLM, nothing is looked up (nor counted) with caching off.
  if (!m.enable_prefix_caching || prompt.empty()) return 0;
  // The contract is for a sequence without blocks; attaching in front of existing ones would scramble its
  // table, so a misuse gets no hit rather than corruption.
  const auto existing = m.sequences.find(seq);
  if (existing != m.sequences.end() && !existing->second.blocks.empty()) return 0;

  m.prefix_queried_tokens += int64_t(prompt.size());
  // At most the full blocks before the last token: that token must be computed to produce logits.
  const int32_t max_hit_blocks = int32_t((prompt.size() - 1) / size_t(m.block_size));
  uint64_t parent_hash = root_hash;
  int32_t parent = root_block;
  uint64_t parent_gen = 0;
  sequence_state* state = existing != m.sequences.end() ? &existing->second : nullptr;
  int32_t num_hits = 0;
  for (; num_hits < max_hit_blocks; ++num_hits) {
    const auto chunk = prompt.subspan(size_t(num_hits) * size_t(m.block_size), size_t(m.block_size));
    const uint64_t h = m.hash(parent_hash, chunk);
    const int32_t block = m.pool.find_cached(h);
    if (block < 0 || !m.holds(block, parent, parent_gen, chunk)) break;
    // Attached right away: touching only changes ref counts and the LRU, never what a later lookup finds.
    m.pool.touch(block);
    if (!state) state = &m.sequences[seq];
    state->blocks.push_back(block);
    parent_hash = h;
    parent = block;
    parent_gen = m.generation[size_t(block)];
  }
  if (state) {
    state->num_registered = num_hits;
    state->last_hash = parent_hash;
    state->last_canonical_block = parent;
    state->last_canonical_generation = parent_gen;
  }
  const int32_t hit_tokens = num_hits * m.block_size;
  m.prefix_hit_tokens += hit_tokens;
  return hit_tokens;
}

bool kv_cache_manager::allocate_slots(sequence_id seq, int32_t num_tokens) {
  impl& m = *impl_;
  assert(num_tokens >= 0);
  const auto existing = m.sequences.find(seq);
  const int64_t have = existing == m.sequences.end() ? 0 : int64_t(existing->second.blocks.size());
  const int64_t want = (int64_t(num_tokens) + m.block_size - 1) / m.block_size;
  const int64_t needed = want - have;
  if (needed <= 0) return true;  // tables never shrink here: free() is the only way blocks go back
  // All or nothing: check the whole request before taking (or evicting) anything.
  if (needed > m.pool.num_available_blocks()) return false;
  auto& blocks = existing == m.sequences.end() ? m.sequences[seq].blocks : existing->second.blocks;
  for (int64_t i = 0; i < needed; ++i) blocks.push_back(m.pool.allocate());
  return true;
}

void kv_cache_manager::cache_full_blocks(sequence_id seq, std::span<const int32_t> tokens, int32_t num_computed) {
  impl& m = *impl_;
  if (!m.enable_prefix_caching) return;
  const auto found = m.sequences.find(seq);
  if (found == m.sequences.end()) return;
  sequence_state& state = found->second;
  if (state.registration_stopped) return;
  const size_t computed = std::min(size_t(std::max(num_computed, 0)), tokens.size());
  const int32_t num_full = int32_t(std::min(computed / size_t(m.block_size), state.blocks.size()));
  for (; state.num_registered < num_full; ++state.num_registered) {
    const auto chunk =
        tokens.subspan(size_t(state.num_registered) * size_t(m.block_size), size_t(m.block_size));
    const uint64_t h = m.hash(state.last_hash, chunk);
    const int32_t block = state.blocks[size_t(state.num_registered)];
    int32_t holder = m.pool.find_cached(h);
    if (holder >= 0 && !m.holds(holder, state.last_canonical_block, state.last_canonical_generation, chunk)) {
      if (!m.parent_link_stale(holder)) {
        // A live entry for other contents: a genuine 64-bit collision, or our own link went stale (the
        // other sequence's block we chained to was evicted meanwhile). Either way our block cannot be found
        // by this hash, so nothing chained behind it could be either: a lost hit, never a false one.
        state.registration_stopped = true;
        return;
      }
      m.pool.drop_hash(holder);  // unreachable by any walk: let our block take the slot
      holder = -1;
    }
    if (holder < 0) {
      const bool registered = m.pool.set_hash(block, h);
      assert(registered);
      (void)registered;
      std::copy(chunk.begin(), chunk.end(), m.block_tokens.data() + size_t(block) * size_t(m.block_size));
      m.parent_block[size_t(block)] = state.last_canonical_block;
      m.parent_generation[size_t(block)] = state.last_canonical_generation;
      ++m.generation[size_t(block)];
      holder = block;
    }
    // else: another block already holds these exact contents; keep that mapping and chain to it.
    state.last_hash = h;
    state.last_canonical_block = holder;
    state.last_canonical_generation = m.generation[size_t(holder)];
  }
}

void kv_cache_manager::free(sequence_id seq) {
  impl& m = *impl_;
  const auto found = m.sequences.find(seq);
  if (found == m.sequences.end()) return;
  // Tail first, as vLLM: the LRU then holds the sequence's last block as the oldest, so eviction eats a
  // cached prefix from its end and the shared head (the likelier hit) survives longest.
  const auto& blocks = found->second.blocks;
  for (auto block = blocks.rbegin(); block != blocks.rend(); ++block) m.pool.release(*block);
  m.sequences.erase(found);
}

std::span<const int32_t> kv_cache_manager::block_table(sequence_id seq) const {
  const auto found = impl_->sequences.find(seq);
  if (found == impl_->sequences.end()) return {};
  return found->second.blocks;
}

kv_cache_stats kv_cache_manager::stats() const {
  const impl& m = *impl_;
  kv_cache_stats stats;
  stats.num_blocks = m.pool.num_blocks();
  stats.used_blocks = m.pool.num_used_blocks();
  stats.cached_blocks = m.pool.num_cached_blocks();
  stats.free_blocks = m.pool.num_free_blocks();
  stats.prefix_queried_tokens = m.prefix_queried_tokens;
  stats.prefix_hit_tokens = m.prefix_hit_tokens;
  return stats;
}

void kv_cache_manager_test_hook::set_hash_function(kv_cache_manager& manager, hash_function function) {
  manager.impl_->hash = function;
}

int32_t kv_cache_manager_test_hook::ref_count(const kv_cache_manager& manager, int32_t block) {
  return manager.impl_->pool.ref_count(block);
}

}  // namespace inflight::engine
