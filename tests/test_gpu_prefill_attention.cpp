// gpu/prefill_attention: both paths (tensor cores, fp32 reference) against a host reference computed in
// double from the bf16 values the device sees, for random ragged batches read through random,
// non-contiguous block tables (fixed seeds).
//
// Tolerance: |device - reference| <= 1e-2 * |reference| + 4e-3. The outputs are convex combinations of V
// values in [-1, 1]. The bf16 output rounding costs up to 2^-9 relative (2e-3 at |out| ~ 1); the tensor-core
// path also rounds the probabilities P to bf16 before P V (2^-9 relative per term, bounded by 2e-3 absolute
// in the sum, and in practice averaging out), while its normaliser sums the fp32 values. fp32 accumulation
// order is a further ~1e-6. The fp32 reference path only has the output rounding.
//
// Every cache slot that no sequence wrote holds NaN (block tails past seq_lens, spare blocks), block-table
// entries past a sequence's blocks hold INT32_MAX, and rows after the last sequence are padding whose
// output must stay untouched: any read of unwritten state shows up as NaN, a fault, or a changed sentinel.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "gpu_test_support.hpp"
#include "prefill_attention.hpp"

namespace {

using namespace inflight::gpu;
using namespace inflight::gpu::testing;
using bf16 = __nv_bfloat16;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr int32_t kGarbageBlock = std::numeric_limits<int32_t>::max();
constexpr uint16_t kSentinelBits = 0xDEAD;  // a bf16 the kernels never write into padding rows

uint16_t bits(bf16 value) {
  uint16_t raw;
  std::memcpy(&raw, &value, sizeof raw);
  return raw;
}

float random_bf16(std::mt19937& rng, float amplitude) {
  std::uniform_real_distribution<float> dist(-amplitude, amplitude);
  return __bfloat162float(__float2bfloat16(dist(rng)));
}

// One step's attention input, everything in host memory, values already bf16-rounded.
struct attention_problem {
  int head_dim = 64;
  int num_q_heads = 9;
  int num_kv_heads = 3;
  int block_size = 16;
  std::vector<int> q_lens;   // new tokens per sequence
  std::vector<int> kv_lens;  // seq_lens: cached context + new tokens
  int pad_rows = 0;          // rows after the last sequence (graph padding): never attended, never written
  // Built by build_problem():
  std::vector<int32_t> query_start_loc;
  std::vector<int32_t> block_tables;  // [num_seqs][table_stride]
  int table_stride = 0;
  int num_blocks = 0;
  int num_tokens = 0;
  std::vector<float> q;        // [num_tokens][num_q_heads][head_dim]
  std::vector<float> k_cache;  // [num_blocks][block_size][num_kv_heads][head_dim]; NaN where unwritten
  std::vector<float> v_cache;
  float scale = 0.0f;

  int num_seqs() const { return static_cast<int>(q_lens.size()); }
  size_t kv_token_size() const { return static_cast<size_t>(num_kv_heads) * head_dim; }
  size_t q_row_size() const { return static_cast<size_t>(num_q_heads) * head_dim; }
  size_t slot_of(int seq, int position) const {
    const int32_t block = block_tables[static_cast<size_t>(seq) * table_stride + position / block_size];
    return static_cast<size_t>(block) * block_size + position % block_size;
  }
};

int blocks_for(int tokens, int block_size) { return (tokens + block_size - 1) / block_size; }

// Random physical blocks (a shuffled pool with spare blocks left unwritten), K/V for every position below
// seq_lens, NaN elsewhere. With shared_prefix_blocks > 0, sequence 1 maps its first blocks to sequence 0's
// (a prefix-cache hit), so those blocks are read by both.
void build_problem(attention_problem& pr, std::mt19937& rng, float q_amplitude, int shared_prefix_blocks = 0) {
  const int num_seqs = pr.num_seqs();
  REQUIRE(pr.kv_lens.size() == pr.q_lens.size());
  pr.query_start_loc.assign(1, 0);
  for (int s = 0; s < num_seqs; ++s) pr.query_start_loc.push_back(pr.query_start_loc.back() + pr.q_lens[s]);
  pr.num_tokens = pr.query_start_loc.back() + pr.pad_rows;

  int shared = 0;
  if (num_seqs >= 2 && shared_prefix_blocks > 0)
    shared = std::min({shared_prefix_blocks, pr.kv_lens[0] / pr.block_size, pr.kv_lens[1] / pr.block_size});
  int max_blocks = 1;
  int needed = 0;
  for (int s = 0; s < num_seqs; ++s) {
    max_blocks = std::max(max_blocks, blocks_for(pr.kv_lens[s], pr.block_size));
    needed += blocks_for(pr.kv_lens[s], pr.block_size);
  }
  needed -= shared;
  pr.num_blocks = needed + 7;
  pr.table_stride = max_blocks + 3;
  std::vector<int32_t> pool(pr.num_blocks);
  std::iota(pool.begin(), pool.end(), 0);
  std::shuffle(pool.begin(), pool.end(), rng);
  size_t next = 0;
  pr.block_tables.assign(static_cast<size_t>(num_seqs) * pr.table_stride, kGarbageBlock);
  for (int s = 0; s < num_seqs; ++s) {
    for (int b = 0; b < blocks_for(pr.kv_lens[s], pr.block_size); ++b) {
      int32_t& entry = pr.block_tables[static_cast<size_t>(s) * pr.table_stride + b];
      entry = (s == 1 && b < shared) ? pr.block_tables[b] : pool[next++];
    }
  }

  const size_t cache_size = static_cast<size_t>(pr.num_blocks) * pr.block_size * pr.kv_token_size();
  pr.k_cache.assign(cache_size, kNaN);
  pr.v_cache.assign(cache_size, kNaN);
  for (int s = 0; s < num_seqs; ++s) {
    for (int position = 0; position < pr.kv_lens[s]; ++position) {
      const size_t base = pr.slot_of(s, position) * pr.kv_token_size();
      if (!std::isnan(pr.k_cache[base])) continue;  // a shared block, already written
      for (size_t i = 0; i < pr.kv_token_size(); ++i) {
        pr.k_cache[base + i] = random_bf16(rng, 1.0f);
        pr.v_cache[base + i] = random_bf16(rng, 1.0f);
      }
    }
  }
  pr.q.assign(static_cast<size_t>(pr.num_tokens) * pr.q_row_size(), kNaN);
  for (size_t i = 0; i < static_cast<size_t>(pr.query_start_loc.back()) * pr.q_row_size(); ++i)
    pr.q[i] = random_bf16(rng, q_amplitude);
  pr.scale = 1.0f / std::sqrt(static_cast<float>(pr.head_dim));
}

// Causal bottom-right attention in double, reading K/V through the block tables like the device.
std::vector<double> host_reference(const attention_problem& pr) {
  const int d_size = pr.head_dim;
  const int group = pr.num_q_heads / pr.num_kv_heads;
  std::vector<double> out(static_cast<size_t>(pr.num_tokens) * pr.q_row_size(), 0.0);
  std::vector<double> scores;
  std::vector<double> acc(d_size);
  for (int s = 0; s < pr.num_seqs(); ++s) {
    const int q_len = pr.q_lens[s];
    const int kv_len = pr.kv_lens[s];
    for (int i = 0; i < q_len; ++i) {
      const int token = pr.query_start_loc[s] + i;
      const int limit = kv_len - q_len + i;
      for (int h = 0; h < pr.num_q_heads; ++h) {
        const int kv_head = h / group;
        const float* q_row = &pr.q[static_cast<size_t>(token) * pr.q_row_size() + static_cast<size_t>(h) * d_size];
        scores.assign(limit + 1, 0.0);
        double max_score = -std::numeric_limits<double>::infinity();
        for (int key = 0; key <= limit; ++key) {
          const float* k_row = &pr.k_cache[pr.slot_of(s, key) * pr.kv_token_size() + static_cast<size_t>(kv_head) * d_size];
          double dot = 0.0;
          for (int d = 0; d < d_size; ++d) dot += double(q_row[d]) * double(k_row[d]);
          scores[key] = dot * pr.scale;
          max_score = std::max(max_score, scores[key]);
        }
        double sum = 0.0;
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int key = 0; key <= limit; ++key) {
          const double weight = std::exp(scores[key] - max_score);
          sum += weight;
          const float* v_row = &pr.v_cache[pr.slot_of(s, key) * pr.kv_token_size() + static_cast<size_t>(kv_head) * d_size];
          for (int d = 0; d < d_size; ++d) acc[d] += weight * double(v_row[d]);
        }
        double* o = &out[static_cast<size_t>(token) * pr.q_row_size() + static_cast<size_t>(h) * d_size];
        for (int d = 0; d < d_size; ++d) o[d] = sum > 0.0 ? acc[d] / sum : 0.0;
      }
    }
  }
  return out;
}

// Uploads the problem, builds and uploads the tile map, runs one path, returns out (padding rows included).
std::vector<bf16> run_device(const attention_problem& pr, prefill_attention_impl impl) {
  device_buffer<bf16> q(to_bf16(pr.q));
  device_buffer<bf16> k_cache(to_bf16(pr.k_cache));
  device_buffer<bf16> v_cache(to_bf16(pr.v_cache));
  __nv_bfloat16_raw sentinel_raw;
  sentinel_raw.x = kSentinelBits;
  const bf16 sentinel(sentinel_raw);
  device_buffer<bf16> out(std::vector<bf16>(static_cast<size_t>(pr.num_tokens) * pr.q_row_size(), sentinel));
  device_buffer<int32_t> query_start_loc(pr.query_start_loc);
  device_buffer<int32_t> seq_lens(std::vector<int32_t>(pr.kv_lens.begin(), pr.kv_lens.end()));
  device_buffer<int32_t> block_tables(pr.block_tables);

  const int max_tiles = prefill_max_query_tiles(pr.num_tokens, pr.num_seqs(), pr.num_q_heads, pr.num_kv_heads);
  std::vector<int32_t> tile_map_host(2 * static_cast<size_t>(max_tiles));
  build_prefill_tile_map(pr.query_start_loc.data(), pr.num_seqs(), pr.num_q_heads, pr.num_kv_heads,
                         tile_map_host.data(), max_tiles);
  device_buffer<int32_t> tile_map(tile_map_host);

  prefill_attention_params params;
  params.q = q.get();
  params.key_cache = k_cache.get();
  params.value_cache = v_cache.get();
  params.out = out.get();
  params.query_start_loc = query_start_loc.get();
  params.seq_lens = seq_lens.get();
  params.block_tables = block_tables.get();
  params.tile_map = tile_map.get();
  params.num_tokens = pr.num_tokens;
  params.num_seqs = pr.num_seqs();
  params.max_query_tiles = max_tiles;
  params.num_q_heads = pr.num_q_heads;
  params.num_kv_heads = pr.num_kv_heads;
  params.head_dim = pr.head_dim;
  params.block_size = pr.block_size;
  params.block_table_stride = pr.table_stride;
  params.scale = pr.scale;
  prefill_attention(params, nullptr, impl);
  return out.download();
}

std::string impl_name(prefill_attention_impl impl) {
  return impl == prefill_attention_impl::tensor_core ? "tensor_core" : "reference";
}

// Checks the attended rows against the reference and the padding rows against the sentinel.
void check_against_reference(const attention_problem& pr, const std::vector<bf16>& device,
                             const std::vector<double>& reference, prefill_attention_impl impl) {
  REQUIRE(device.size() == reference.size());
  const size_t attended = static_cast<size_t>(pr.query_start_loc.back()) * pr.q_row_size();
  size_t bad = 0, worst = 0;
  double worst_error = 0.0, worst_excess = -1.0;
  for (size_t i = 0; i < attended; ++i) {
    const double value = __bfloat162float(device[i]);
    const double error = std::abs(value - reference[i]);
    const double allowed = 1e-2 * std::abs(reference[i]) + 4e-3;
    if (!(error <= allowed)) ++bad;  // NaN counts as bad
    if (!(error <= worst_error)) worst_error = error;
    if (!(error - allowed <= worst_excess)) {
      worst_excess = error - allowed;
      worst = i;
    }
  }
  size_t touched_padding = 0;
  for (size_t i = attended; i < device.size(); ++i)
    if (bits(device[i]) != kSentinelBits) ++touched_padding;
  INFO(impl_name(impl), ": head_dim ", pr.head_dim, ", heads ", pr.num_q_heads, "/", pr.num_kv_heads,
       ", block_size ", pr.block_size, ", seqs ", pr.num_seqs(), ", max |error| ", worst_error);
  if (bad > 0) {
    const size_t row = worst / pr.q_row_size();
    INFO("worst at token ", row, " head ", (worst % pr.q_row_size()) / pr.head_dim, " dim ", worst % pr.head_dim,
         ": device ", __bfloat162float(device[worst]), " reference ", reference[worst]);
    CHECK(bad == 0);
  }
  CHECK(touched_padding == 0);
  MESSAGE(impl_name(impl), " max |error| ", worst_error);
}

void check_both_paths(const attention_problem& pr) {
  const std::vector<double> reference = host_reference(pr);
  for (const prefill_attention_impl impl : {prefill_attention_impl::tensor_core, prefill_attention_impl::reference})
    check_against_reference(pr, run_device(pr, impl), reference, impl);
}

struct head_config {
  int head_dim, num_q_heads, num_kv_heads;
};
// SmolLM2-135M (GQA 3, d 64), a GQA-4 d 128 group (Llama-3.1-8B has 8 such groups), and GQA 3 at d 128.
// Head counts are kept small where the sequences are long: the host reference is O(T * kv_len * heads * d).
constexpr head_config kSmolLM2{64, 9, 3};
constexpr head_config kLlamaGroup{128, 8, 2};
constexpr head_config kGqa3d128{128, 6, 2};

attention_problem make_problem(head_config heads, int block_size) {
  attention_problem pr;
  pr.head_dim = heads.head_dim;
  pr.num_q_heads = heads.num_q_heads;
  pr.num_kv_heads = heads.num_kv_heads;
  pr.block_size = block_size;
  return pr;
}

// A copy of sequence `seq` of `batch` as a batch of one, reading the same cache blocks.
attention_problem single_sequence_of(const attention_problem& batch, int seq) {
  attention_problem single = batch;
  single.q_lens = {batch.q_lens[seq]};
  single.kv_lens = {batch.kv_lens[seq]};
  single.pad_rows = 0;
  single.query_start_loc = {0, batch.q_lens[seq]};
  single.num_tokens = batch.q_lens[seq];
  single.block_tables.assign(batch.block_tables.begin() + static_cast<ptrdiff_t>(seq) * batch.table_stride,
                             batch.block_tables.begin() + static_cast<ptrdiff_t>(seq + 1) * batch.table_stride);
  single.q.assign(batch.q.begin() + static_cast<ptrdiff_t>(batch.query_start_loc[seq]) * batch.q_row_size(),
                  batch.q.begin() + static_cast<ptrdiff_t>(batch.query_start_loc[seq + 1]) * batch.q_row_size());
  return single;
}

}  // namespace

TEST_CASE("prefill attention: one fresh sequence of 1..2048 tokens") {
  INFLIGHT_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(20240611);
  struct sized_case {
    head_config heads;
    int block_size;
    int length;
  };
  const std::vector<sized_case> cases = {
      {kSmolLM2, 16, 1},      {kSmolLM2, 16, 2},      {kSmolLM2, 16, 20},   {kSmolLM2, 16, 21},
      {kSmolLM2, 16, 22},     {kSmolLM2, 32, 64},     {kSmolLM2, 16, 65},   {kSmolLM2, 16, 129},
      {kSmolLM2, 16, 2048},   {kLlamaGroup, 16, 1},   {kLlamaGroup, 16, 16}, {kLlamaGroup, 16, 17},
      {kLlamaGroup, 32, 63},  {kLlamaGroup, 16, 64},  {kLlamaGroup, 16, 65}, {kLlamaGroup, 16, 700},
      {kGqa3d128, 32, 333},   {kGqa3d128, 16, 1000},
  };
  for (const sized_case& c : cases) {
    CAPTURE(c.length);
    attention_problem pr = make_problem(c.heads, c.block_size);
    pr.q_lens = {c.length};
    pr.kv_lens = {c.length};
    pr.pad_rows = 3;
    build_problem(pr, rng, 3.0f);
    check_both_paths(pr);
  }
}

TEST_CASE("prefill attention: ragged batches with cached context (chunked prefill, prefix hits, decode rows)") {
  INFLIGHT_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(77001);
  const int q_len_choices[] = {1, 7, 16, 17, 64, 65, 300};
  std::uniform_int_distribution<int> pick_q_len(0, 6);
  std::uniform_int_distribution<int> pick_context(0, 1500);
  std::uniform_int_distribution<int> pick_num_seqs(2, 6);
  int trial = 0;
  for (const head_config heads : {kSmolLM2, kLlamaGroup, kGqa3d128}) {
    for (const int block_size : {16, 32}) {
      for (int repeat = 0; repeat < 2; ++repeat, ++trial) {
        CAPTURE(trial);
        attention_problem pr = make_problem(heads, block_size);
        const int num_seqs = pick_num_seqs(rng);
        for (int s = 0; s < num_seqs; ++s) {
          const int q_len = q_len_choices[pick_q_len(rng)];
          // Every other sequence also gets a context length that ends exactly on a block boundary.
          int context = pick_context(rng);
          if (s % 2 == 1) context = context / block_size * block_size;
          if (s == 0 && trial % 3 == 0) context = 0;  // a fresh prefill among continuations
          pr.q_lens.push_back(q_len);
          pr.kv_lens.push_back(context + q_len);
        }
        pr.pad_rows = trial % 3;
        // Larger q in some trials: sharp softmax rows (scores of several tens) exercise the max subtraction.
        const float q_amplitude = trial % 4 == 1 ? 24.0f : 3.0f;
        build_problem(pr, rng, q_amplitude, /*shared_prefix_blocks=*/trial % 2 == 0 ? 40 : 0);
        check_both_paths(pr);
      }
    }
  }
}

TEST_CASE("prefill attention: empty and zero-length sequences in a batch (graph padding)") {
  INFLIGHT_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(5150);
  attention_problem pr = make_problem(kLlamaGroup, 16);
  // A padded sequence with no tokens and no cache, one with cached context but no new tokens, then real ones.
  pr.q_lens = {0, 5, 0, 1, 40};
  pr.kv_lens = {0, 5, 37, 90, 200};
  pr.pad_rows = 4;
  build_problem(pr, rng, 3.0f);
  check_both_paths(pr);
}

TEST_CASE("prefill attention: results are batch invariant, bit for bit") {
  INFLIGHT_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(31337);
  for (const head_config heads : {kSmolLM2, kLlamaGroup}) {
    attention_problem batch = make_problem(heads, 16);
    batch.q_lens = {65, 1, 300, 17, 7};
    batch.kv_lens = {65, 800, 1100, 17 + 64, 7 + 250};
    batch.pad_rows = 2;
    build_problem(batch, rng, 3.0f, /*shared_prefix_blocks=*/3);
    for (const prefill_attention_impl impl :
         {prefill_attention_impl::tensor_core, prefill_attention_impl::reference}) {
      CAPTURE(impl_name(impl));
      const std::vector<bf16> batched = run_device(batch, impl);
      for (int seq = 0; seq < batch.num_seqs(); ++seq) {
        CAPTURE(seq);
        const std::vector<bf16> alone = run_device(single_sequence_of(batch, seq), impl);
        const size_t offset = static_cast<size_t>(batch.query_start_loc[seq]) * batch.q_row_size();
        size_t differing = 0;
        for (size_t i = 0; i < alone.size(); ++i)
          if (bits(alone[i]) != bits(batched[offset + i])) ++differing;
        CHECK(differing == 0);
      }
    }
  }
}

TEST_CASE("prefill attention: tile map format and bound") {
  // Host-only helpers: runs without a device.
  // GQA 3 -> 21 rows per tile. Sequences of 1, 0, 64 and 135 rows.
  const std::vector<int32_t> query_start_loc = {0, 1, 1, 65, 200};
  const int bound = prefill_max_query_tiles(200, 4, 9, 3);
  CHECK(prefill_query_rows_per_tile(9, 3) == 21);
  CHECK(prefill_query_rows_per_tile(32, 8) == 16);
  CHECK(prefill_query_rows_per_tile(4, 4) == 64);
  std::vector<int32_t> tile_map(2 * static_cast<size_t>(bound + 1) + 2, 12345);
  const int count = build_prefill_tile_map(query_start_loc.data(), 4, 9, 3, tile_map.data(), bound + 1);
  // Sequence 0: row 0. Sequence 2 (64 rows): 63, 42, 21, 0. Sequence 3 (135 rows): 126, 105, ..., 0.
  const std::vector<int32_t> expected = {0, 0,  2, 63, 2, 42, 2, 21, 2, 0,  3, 126, 3, 105, 3, 84,
                                         3, 63, 3, 42, 3, 21, 3, 0};
  REQUIRE(count == 12);
  CHECK(count <= bound);
  CHECK(std::vector<int32_t>(tile_map.begin(), tile_map.begin() + 2 * count) == expected);
  for (int i = count; i < bound + 1; ++i) CHECK(tile_map[2 * i] == -1);
  CHECK(tile_map[2 * (bound + 1)] == 12345);  // nothing written past max_query_tiles
  CHECK_THROWS_AS(build_prefill_tile_map(query_start_loc.data(), 4, 9, 3, tile_map.data(), 11), std::invalid_argument);

  // The bound holds for random batches.
  std::mt19937 rng(99);
  for (int trial = 0; trial < 200; ++trial) {
    const int num_seqs = 1 + static_cast<int>(rng() % 40);
    const int group = 1 + static_cast<int>(rng() % 8);
    std::vector<int32_t> qsl = {0};
    for (int s = 0; s < num_seqs; ++s) qsl.push_back(qsl.back() + static_cast<int>(rng() % 200));
    const int max_tiles = prefill_max_query_tiles(qsl.back(), num_seqs, group * 2, 2);
    std::vector<int32_t> map(2 * static_cast<size_t>(max_tiles) + 2);
    CHECK_NOTHROW(build_prefill_tile_map(qsl.data(), num_seqs, group * 2, 2, map.data(), max_tiles));
  }
}

TEST_CASE("prefill attention: invalid arguments are rejected on the host") {
  // Validation happens before any CUDA call: runs without a device.
  alignas(16) static bf16 dummy[64];
  static int32_t ints[4] = {0, 1, 1, 0};
  prefill_attention_params good;
  good.q = dummy;
  good.key_cache = dummy;
  good.value_cache = dummy;
  good.out = dummy;
  good.query_start_loc = ints;
  good.seq_lens = ints;
  good.block_tables = ints;
  good.tile_map = ints;
  good.num_tokens = 1;
  good.num_seqs = 1;
  good.max_query_tiles = 1;
  good.num_q_heads = 9;
  good.num_kv_heads = 3;
  good.head_dim = 64;
  good.block_size = 16;
  good.block_table_stride = 1;
  good.scale = 0.125f;

  auto rejects = [](prefill_attention_params p, const char* word) {
    CAPTURE(word);
    try {
      prefill_attention(p, nullptr);
      FAIL("accepted");
    } catch (const std::invalid_argument& error) {
      CHECK(std::string(error.what()).find(word) != std::string::npos);
    }
  };
  prefill_attention_params p = good;
  p.head_dim = 96;
  rejects(p, "head_dim");
  p = good;
  p.head_dim = 256;
  rejects(p, "head_dim");
  p = good;
  p.num_kv_heads = 2;
  rejects(p, "num_kv_heads");
  p = good;
  p.num_q_heads = 34;
  p.num_kv_heads = 2;  // group of 17
  rejects(p, "num_q_heads / num_kv_heads");
  p = good;
  p.block_size = 0;
  rejects(p, "block_size");
  p = good;
  p.block_table_stride = 0;
  rejects(p, "block_table_stride");
  p = good;
  p.tile_map = nullptr;
  rejects(p, "tile_map");
  p = good;
  p.q = dummy + 1;  // not 16-byte aligned
  rejects(p, "q must be 16-byte aligned");
  p = good;
  p.scale = std::numeric_limits<float>::infinity();
  rejects(p, "scale");
  CHECK_THROWS_AS(prefill_query_rows_per_tile(9, 2), std::invalid_argument);
}
