// KV-block bookkeeping (actors/kv_cache_manager over actors/block_pool): block tables and all-or-nothing
// allocation, the no-leaked-block invariant, automatic prefix caching (hits, the last-token cap, chained
// hashes, sharing), LRU eviction order, collision safety with an injected hash, caching switched off, and a
// randomized run checked against a shadow of what every block really holds.
#include <doctest/doctest.h>

#include <algorithm>
#include <map>
#include <random>
#include <set>
#include <vector>

#include "kv_cache_manager.hpp"

using inflight::engine::kv_cache_manager;
using inflight::engine::kv_cache_manager_test_hook;
using inflight::engine::kv_cache_stats;
using inflight::engine::sequence_id;

namespace {

constexpr int32_t block_size = 4;

using tokens = std::vector<int32_t>;

tokens concat(std::initializer_list<tokens> parts) {
  tokens out;
  for (const auto& part : parts) out.insert(out.end(), part.begin(), part.end());
  return out;
}

tokens table_of(const kv_cache_manager& kv, sequence_id seq) {
  const auto table = kv.block_table(seq);
  return tokens(table.begin(), table.end());
}

void check_counts(const kv_cache_manager& kv) {
  const kv_cache_stats s = kv.stats();
  CHECK(s.used_blocks >= 0);
  CHECK(s.cached_blocks >= 0);
  CHECK(s.free_blocks >= 0);
  CHECK(s.used_blocks + s.cached_blocks + s.free_blocks == s.num_blocks);
}

// What a scheduler does for a prompt computed in one step: look up the prefix, cover the whole prompt,
// compute it, register its full blocks. Returns the prefix hit in tokens.
int32_t run_prompt(kv_cache_manager& kv, sequence_id seq, const tokens& prompt) {
  const int32_t hit = kv.computed_prefix(seq, prompt);
  REQUIRE(kv.allocate_slots(seq, int32_t(prompt.size())));
  kv.cache_full_blocks(seq, prompt, int32_t(prompt.size()));
  return hit;
}

const tokens block_a{1, 2, 3, 4};
const tokens block_b{5, 6, 7, 8};
const tokens block_c{9, 10, 11, 12};
const tokens block_d{13, 14, 15, 16};

}  // namespace

TEST_CASE("allocation grows block tables by ceil of tokens over block size") {
  kv_cache_manager kv(16, block_size, true);
  CHECK(kv.block_size() == block_size);
  CHECK(kv.block_table(7).empty());
  REQUIRE(kv.allocate_slots(7, 1));
  CHECK(kv.block_table(7).size() == 1);
  REQUIRE(kv.allocate_slots(7, 4));
  CHECK(kv.block_table(7).size() == 1);
  REQUIRE(kv.allocate_slots(7, 5));
  CHECK(kv.block_table(7).size() == 2);
  REQUIRE(kv.allocate_slots(7, 13));
  CHECK(kv.block_table(7).size() == 4);
  REQUIRE(kv.allocate_slots(7, 2));  // never shrinks
  CHECK(kv.block_table(7).size() == 4);
  REQUIRE(kv.allocate_slots(8, 9));
  CHECK(kv.block_table(8).size() == 3);
  std::set<int32_t> distinct;
  for (const sequence_id seq : {7, 8}) {
    for (const int32_t block : kv.block_table(seq)) {
      CHECK(block >= 0);
      CHECK(block < 16);
      distinct.insert(block);
    }
  }
  CHECK(distinct.size() == 7);
  CHECK(kv.stats().used_blocks == 7);
  CHECK(kv.stats().free_blocks == 9);
  check_counts(kv);
}

TEST_CASE("allocate_slots refuses a short pool and changes nothing") {
  kv_cache_manager kv(5, block_size, true);
  REQUIRE(kv.allocate_slots(1, 12));  // 3 blocks
  const tokens before = table_of(kv, 1);
  CHECK_FALSE(kv.allocate_slots(1, 21));  // needs 3 more, 2 left
  CHECK(table_of(kv, 1) == before);
  CHECK_FALSE(kv.allocate_slots(2, 9));  // a new sequence: no table appears either
  CHECK(kv.block_table(2).empty());
  CHECK(kv.stats().used_blocks == 3);
  CHECK(kv.stats().free_blocks == 2);
  CHECK(kv.allocate_slots(1, 20));  // exactly what is left
  CHECK(kv.block_table(1).size() == 5);
  CHECK(kv.stats().free_blocks == 0);
  CHECK_FALSE(kv.allocate_slots(2, 1));
  check_counts(kv);
}

TEST_CASE("free returns every block and leaks none") {
  kv_cache_manager kv(32, block_size, true);
  const tokens prompt = concat({block_a, block_b, {1, 2}});
  for (sequence_id seq = 0; seq < 5; ++seq) run_prompt(kv, seq, prompt);
  REQUIRE(kv.allocate_slots(9, 30));
  CHECK(kv.stats().used_blocks > 0);
  for (sequence_id seq = 0; seq < 5; ++seq) kv.free(seq);
  kv.free(9);
  kv.free(12345);  // unknown: ignored
  const kv_cache_stats s = kv.stats();
  CHECK(s.used_blocks == 0);
  CHECK(s.free_blocks + s.cached_blocks == s.num_blocks);
  CHECK(s.cached_blocks == 2);  // the two full prompt blocks stay reusable
  CHECK(kv.block_table(0).empty());
  // Everything can be taken again, cached blocks by eviction.
  CHECK(kv.allocate_slots(20, 32 * block_size));
  CHECK(kv.stats().used_blocks == 32);
  kv.free(20);
  CHECK(kv.stats().used_blocks == 0);
  CHECK(kv.stats().free_blocks == 32);
}

TEST_CASE("prefix hit reuses the physical blocks of a freed sequence") {
  kv_cache_manager kv(32, block_size, true);
  const tokens prompt_a = concat({block_a, block_b, block_c, {20, 21}});  // 3.5 blocks
  CHECK(run_prompt(kv, 1, prompt_a) == 0);
  const tokens blocks_a = table_of(kv, 1);
  REQUIRE(blocks_a.size() == 4);
  kv.free(1);
  CHECK(kv.stats().cached_blocks == 3);
  CHECK(kv.stats().used_blocks == 0);

  const tokens prompt_b = concat({block_a, block_b, block_c, {30, 31, 32, 33, 34}});
  CHECK(kv.computed_prefix(2, prompt_b) == 3 * block_size);
  CHECK(table_of(kv, 2) == tokens(blocks_a.begin(), blocks_a.begin() + 3));
  CHECK(kv.stats().cached_blocks == 0);
  CHECK(kv.stats().used_blocks == 3);
  REQUIRE(kv.allocate_slots(2, int32_t(prompt_b.size())));
  CHECK(kv.block_table(2).size() == 5);
  CHECK(tokens(kv.block_table(2).begin(), kv.block_table(2).begin() + 3) ==
        tokens(blocks_a.begin(), blocks_a.begin() + 3));
  kv.free(2);
  CHECK(kv.stats().used_blocks == 0);
  check_counts(kv);
}

TEST_CASE("a fully cached prompt leaves its last block to compute") {
  kv_cache_manager kv(32, block_size, true);
  run_prompt(kv, 1, concat({block_a, block_b, block_c, {20, 21}}));
  kv.free(1);
  const tokens exact = concat({block_a, block_b, block_c});  // 3 full blocks, all cached
  CHECK(kv.computed_prefix(2, exact) == 2 * block_size);
  CHECK(kv.block_table(2).size() == 2);
  // One token past the cached blocks: all three can be used.
  CHECK(kv.computed_prefix(3, concat({exact, {99}})) == 3 * block_size);
  // Shorter than a block: nothing to hit.
  CHECK(kv.computed_prefix(4, tokens{1, 2, 3}) == 0);
  CHECK(kv.computed_prefix(5, tokens{}) == 0);
}

TEST_CASE("a prompt differing in its first token misses") {
  kv_cache_manager kv(32, block_size, true);
  run_prompt(kv, 1, concat({block_a, block_b, block_c, {20, 21}}));
  kv.free(1);
  tokens other = concat({block_a, block_b, block_c, {20, 21}});
  other[0] = 77;
  CHECK(kv.computed_prefix(2, other) == 0);
  CHECK(kv.block_table(2).empty());
  // A difference in the second block keeps the first.
  tokens second = concat({block_a, block_b, block_c, {20, 21}});
  second[5] = 77;
  CHECK(kv.computed_prefix(3, second) == block_size);
}

TEST_CASE("sequences sharing cached blocks keep them used until the last one frees") {
  kv_cache_manager kv(32, block_size, true);
  const tokens prompt = concat({block_a, block_b, {40}});
  run_prompt(kv, 1, prompt);
  const tokens blocks_1 = table_of(kv, 1);
  // 2 computes while 1 is still running: a hit on live blocks.
  CHECK(run_prompt(kv, 2, concat({block_a, block_b, {41, 42}})) == 2 * block_size);
  const tokens blocks_2 = table_of(kv, 2);
  CHECK(blocks_2[0] == blocks_1[0]);
  CHECK(blocks_2[1] == blocks_1[1]);
  CHECK(blocks_2[2] != blocks_1[2]);
  CHECK(kv_cache_manager_test_hook::ref_count(kv, blocks_1[0]) == 2);
  CHECK(kv_cache_manager_test_hook::ref_count(kv, blocks_1[1]) == 2);
  CHECK(kv_cache_manager_test_hook::ref_count(kv, blocks_1[2]) == 1);
  CHECK(kv.stats().used_blocks == 4);
  kv.free(1);
  CHECK(kv_cache_manager_test_hook::ref_count(kv, blocks_1[0]) == 1);
  CHECK(kv.stats().used_blocks == 3);  // the shared two stay used by 2
  CHECK(kv.stats().cached_blocks == 0);
  kv.free(2);
  CHECK(kv.stats().used_blocks == 0);
  CHECK(kv.stats().cached_blocks == 2);
}

TEST_CASE("stats count queried and hit prompt tokens") {
  kv_cache_manager kv(32, block_size, true);
  CHECK(kv.stats().prefix_hit_rate() == 0.0);
  const tokens prompt = concat({block_a, block_b, {1, 2}});  // 10 tokens
  run_prompt(kv, 1, prompt);                                 // queried 10, hit 0
  run_prompt(kv, 2, prompt);                                 // queried 10, hit 8
  run_prompt(kv, 3, concat({block_a, {7, 7, 7, 7, 7, 7}}));  // queried 10, hit 4
  const kv_cache_stats s = kv.stats();
  CHECK(s.prefix_queried_tokens == 30);
  CHECK(s.prefix_hit_tokens == 12);
  CHECK(s.prefix_hit_rate() == doctest::Approx(0.4));
}

TEST_CASE("chained hashes: the same block under a different parent does not hit") {
  kv_cache_manager kv(32, block_size, true);
  run_prompt(kv, 1, concat({block_a, block_b, {50}}));
  kv.free(1);
  // block_b cached behind block_a is not block_b at the start of a prompt.
  CHECK(kv.computed_prefix(2, concat({block_b, {50}})) == 0);
  // And registering block_b at the root is its own identity (with an unchained hash it would clash with
  // the one behind block_a and stop registration): a later prompt then hits both of its blocks.
  CHECK(run_prompt(kv, 3, concat({block_b, block_c, {51}})) == 0);
  kv.free(3);
  CHECK(kv.computed_prefix(4, concat({block_b, block_c, {52}})) == 2 * block_size);
  CHECK(kv.computed_prefix(5, concat({block_a, block_b, {53}})) == 2 * block_size);
}

TEST_CASE("LRU eviction takes free blocks first then the least recently released cached one") {
  kv_cache_manager kv(8, block_size, true);
  const tokens prompt_a = concat({block_a, block_b, {60}});
  const tokens prompt_b = concat({block_c, block_d, {61}});
  run_prompt(kv, 1, prompt_a);
  run_prompt(kv, 2, prompt_b);
  const tokens a = table_of(kv, 1);
  const tokens b = table_of(kv, 2);
  kv.free(1);  // LRU: a[1] a[0]    (tail released first)
  kv.free(2);  // LRU: a[1] a[0] b[1] b[0]
  CHECK(kv.stats().cached_blocks == 4);
  CHECK(kv.stats().free_blocks == 4);

  // Four free blocks exist: no cached block is touched.
  REQUIRE(kv.allocate_slots(3, 4 * block_size));
  CHECK(kv.stats().cached_blocks == 4);
  CHECK(kv.stats().free_blocks == 0);
  const std::set<int32_t> cached_ids = {a[0], a[1], b[0], b[1]};  // a[2], b[2] were partial: freed
  for (const int32_t block : kv.block_table(3)) CHECK(cached_ids.count(block) == 0);

  // Now each new block evicts, oldest release first: a[1], then a[0].
  REQUIRE(kv.allocate_slots(4, block_size));
  CHECK(kv.block_table(4)[0] == a[1]);
  CHECK(kv.computed_prefix(5, prompt_a) == block_size);  // a[1] gone: only a[0] hits
  CHECK(table_of(kv, 5) == tokens{a[0]});
  // a[0] is referenced again: the next eviction skips it and takes b[1].
  REQUIRE(kv.allocate_slots(6, block_size));
  CHECK(kv.block_table(6)[0] == b[1]);
  REQUIRE(kv.allocate_slots(7, block_size));
  CHECK(kv.block_table(7)[0] == b[0]);
  // Only the referenced a[0] is left, and it is not evictable.
  CHECK(kv.stats().cached_blocks == 0);
  CHECK_FALSE(kv.allocate_slots(8, 1));
  CHECK(kv.computed_prefix(9, prompt_b) == 0);  // evicted blocks no longer hit
  CHECK(table_of(kv, 5) == tokens{a[0]});
  CHECK(kv_cache_manager_test_hook::ref_count(kv, a[0]) == 1);
  for (const sequence_id seq : {3, 4, 5, 6, 7}) kv.free(seq);
  CHECK(kv.stats().used_blocks == 0);
  check_counts(kv);
}

TEST_CASE("a forced hash collision on a block's tokens is no false hit") {
  kv_cache_manager kv(16, block_size, true);
  // Every block gets the same hash.
  kv_cache_manager_test_hook::set_hash_function(
      kv, [](uint64_t, std::span<const int32_t>) -> uint64_t { return 42; });
  CHECK(run_prompt(kv, 1, concat({block_a, block_b, {70}})) == 0);
  kv.free(1);
  CHECK(kv.stats().cached_blocks == 1);  // block_b collided with block_a's entry: not registered
  CHECK(kv.computed_prefix(2, concat({block_c, {71}})) == 0);  // hash found, tokens differ
  CHECK(kv.block_table(2).empty());
  CHECK(kv.computed_prefix(3, concat({block_a, block_b, {72}})) == block_size);  // block_a is genuine
  kv.free(3);
  CHECK(kv.stats().used_blocks == 0);
}

TEST_CASE("a forced hash collision under a different parent is no false hit") {
  kv_cache_manager kv(16, block_size, true);
  // A hash that ignores the parent: equal tokens collide wherever they sit in a prompt.
  kv_cache_manager_test_hook::set_hash_function(kv, [](uint64_t, std::span<const int32_t> block) -> uint64_t {
    uint64_t h = 1469598103934665603ull;
    for (const int32_t token : block) h = (h ^ uint64_t(uint32_t(token))) * 1099511628211ull;
    return h;
  });
  run_prompt(kv, 1, concat({block_a, block_b, block_c, {80}}));
  kv.free(1);
  CHECK(kv.computed_prefix(2, concat({block_b, {81}})) == 0);            // block_b only exists behind block_a
  CHECK(kv.computed_prefix(3, concat({block_a, block_c, {82}})) == block_size);  // block_c sits behind block_b
  CHECK(kv.computed_prefix(4, concat({block_a, block_b, block_c, {83}})) == 3 * block_size);
}

TEST_CASE("a dead entry behind an evicted parent gives way to a live block") {
  kv_cache_manager kv(6, block_size, true);
  const tokens prompt = concat({block_a, block_b, {90}});
  // 1 and 2 compute the same prompt side by side: 1 registers both blocks, 2's blocks duplicate them.
  CHECK(kv.computed_prefix(1, concat({block_a, {91}})) == 0);
  REQUIRE(kv.allocate_slots(1, 5));
  CHECK(kv.computed_prefix(2, prompt) == 0);
  kv.cache_full_blocks(1, concat({block_a, {91}}), 5);  // 1 registers block_a
  REQUIRE(kv.allocate_slots(2, int32_t(prompt.size())));
  kv.cache_full_blocks(2, prompt, int32_t(prompt.size()));  // block_a: 1's entry; block_b: 2's, behind it
  kv.free(1);  // block_a's entry becomes evictable while 2 still holds the block_b behind it
  REQUIRE(kv.allocate_slots(3, 3 * block_size));  // exhausts the pool: evicts block_a's entry
  CHECK(kv.stats().cached_blocks == 0);
  CHECK(kv.computed_prefix(4, prompt) == 0);
  kv.free(3);
  // 5 computes the prompt anew; 2's block_b entry hangs off the evicted block_a and can never hit, so 5's
  // block_b replaces it rather than being left out of the cache.
  CHECK(run_prompt(kv, 5, prompt) == 0);
  kv.free(5);
  kv.free(2);
  CHECK(kv.computed_prefix(6, prompt) == 2 * block_size);
  kv.free(6);
  CHECK(kv.stats().used_blocks == 0);
  check_counts(kv);
}

TEST_CASE("prefix caching disabled caches nothing") {
  kv_cache_manager kv(8, block_size, false);
  const tokens prompt = concat({block_a, block_b, {1}});
  CHECK(run_prompt(kv, 1, prompt) == 0);
  kv.free(1);
  CHECK(kv.stats().cached_blocks == 0);
  CHECK(kv.stats().free_blocks == 8);
  CHECK(run_prompt(kv, 2, prompt) == 0);
  CHECK(kv.stats().prefix_queried_tokens == 0);
  CHECK(kv.stats().prefix_hit_tokens == 0);
  kv.free(2);
  CHECK(kv.stats().free_blocks == 8);
}

TEST_CASE("randomized operations keep the block invariants") {
  constexpr int32_t num_blocks = 24;
  constexpr int num_sequences = 20;
  kv_cache_manager kv(num_blocks, block_size, true);
  std::mt19937 rng(20240611);
  auto uniform = [&rng](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };

  // Shared prompt heads, so that hits, sharing and eviction of shared blocks all happen.
  const std::vector<tokens> heads = {{}, concat({block_a, block_b}), concat({block_a, block_c, block_d, {3}}),
                                     concat({block_d, block_d, block_d})};
  struct model_sequence {
    bool live = false;
    tokens all;             // prompt then generated
    int32_t allocated = 0;  // tokens the table must cover
    int32_t computed = 0;
    int32_t hit_blocks = 0;
  };
  std::vector<model_sequence> model(num_sequences);
  // What each physical block holds, as its owners wrote it: a hit must find exactly its prompt's tokens.
  std::vector<tokens> shadow(num_blocks, tokens(block_size, -1));
  int64_t hits = 0, shared_seen = 0, refusals = 0, evictions = 0;

  auto check_invariants = [&] {
    check_counts(kv);
    std::map<int32_t, int> holders, own_holders;
    for (int s = 0; s < num_sequences; ++s) {
      const tokens table = table_of(kv, sequence_id(s));
      if (!model[s].live) {
        CHECK(table.empty());
        continue;
      }
      CHECK(int64_t(table.size()) == (int64_t(model[s].allocated) + block_size - 1) / block_size);
      CHECK(std::set<int32_t>(table.begin(), table.end()).size() == table.size());
      for (size_t i = 0; i < table.size(); ++i) {
        ++holders[table[i]];
        if (int32_t(i) >= model[s].hit_blocks) ++own_holders[table[i]];
      }
    }
    CHECK(int32_t(holders.size()) == kv.stats().used_blocks);
    for (const auto& [block, count] : holders) {
      CHECK(kv_cache_manager_test_hook::ref_count(kv, block) == count);
      CHECK(own_holders[block] <= 1);  // shared only through prefix hits
      if (count > 1) ++shared_seen;
    }
  };

  for (int op = 0; op < 2000; ++op) {
    const int s = uniform(0, num_sequences - 1);
    model_sequence& seq = model[size_t(s)];
    const sequence_id id = sequence_id(s);
    const int kind = uniform(0, 9);
    if (!seq.live) {
      // Admit: prompt = a shared head and a short random tail of a small vocabulary.
      seq = model_sequence{};
      seq.all = heads[size_t(uniform(0, int(heads.size()) - 1))];
      for (int n = uniform(1, 9); n > 0; --n) seq.all.push_back(uniform(0, 3));
      const int32_t hit = kv.computed_prefix(id, seq.all);
      CHECK(hit % block_size == 0);
      CHECK(hit < int32_t(seq.all.size()));
      const tokens table = table_of(kv, id);
      REQUIRE(int32_t(table.size()) * block_size == hit);
      for (size_t i = 0; i < table.size(); ++i) {
        CHECK(shadow[size_t(table[i])] == tokens(seq.all.begin() + ptrdiff_t(i * block_size),
                                                 seq.all.begin() + ptrdiff_t((i + 1) * block_size)));
      }
      seq.live = true;
      seq.hit_blocks = hit / block_size;
      seq.allocated = seq.computed = hit;
      hits += hit;
    } else if (kind < 5) {
      // Schedule a chunk (prefill) or one token (decode), then compute it and register full blocks.
      if (seq.computed == int32_t(seq.all.size())) seq.all.push_back(uniform(0, 3));
      const int32_t target = std::min(int32_t(seq.all.size()), seq.computed + uniform(1, 7));
      const tokens before = table_of(kv, id);
      const kv_cache_stats stats_before = kv.stats();
      if (!kv.allocate_slots(id, target)) {
        ++refusals;
        CHECK(table_of(kv, id) == before);
        CHECK(kv.stats().free_blocks == stats_before.free_blocks);
        CHECK(kv.stats().cached_blocks == stats_before.cached_blocks);
        CHECK((target + block_size - 1) / block_size - int32_t(before.size()) >
              stats_before.free_blocks + stats_before.cached_blocks);
      } else {
        seq.allocated = std::max(seq.allocated, target);
        if (kv.stats().cached_blocks < stats_before.cached_blocks) ++evictions;
        const auto table = kv.block_table(id);
        for (int32_t position = seq.computed; position < target; ++position) {
          const int32_t block = table[size_t(position / block_size)];
          shadow[size_t(block)][size_t(position % block_size)] = seq.all[size_t(position)];
        }
        seq.computed = target;
        kv.cache_full_blocks(id, seq.all, seq.computed);
      }
    } else if (kind < 7) {
      kv.cache_full_blocks(id, seq.all, seq.computed);  // repeated registration is harmless
    } else {
      kv.free(id);
      seq.live = false;
    }
    check_invariants();
  }
  for (int s = 0; s < num_sequences; ++s) {
    kv.free(sequence_id(s));
    model[size_t(s)].live = false;
  }
  check_invariants();
  const kv_cache_stats s = kv.stats();
  CHECK(s.used_blocks == 0);
  CHECK(s.free_blocks + s.cached_blocks == num_blocks);
  // The run really exercised what it claims to.
  CHECK(hits > 0);
  CHECK(shared_seen > 0);
  CHECK(refusals > 0);
  CHECK(evictions > 0);
  CHECK(s.prefix_hit_tokens == hits);
}
