// gpu/decode_attention against a host reference (double softmax over the bf16 values the device reads),
// on paged caches with random non-contiguous block tables whose unused slots and blocks hold NaN: a read
// past a sequence's length turns its output into NaN and fails the comparison.
//
// Tolerance: |device - reference| <= 1e-2 * |reference| + 2e-4. The output is rounded to bf16 once
// (relative error <= 2^-8 including a rounding-boundary flip); the fp32 dot products, exp2f and sums over
// at most 4096 positions add errors of order 1e-6 in absolute terms (outputs are averages of values in
// [-1, 1]), so 2e-4 covers them with a wide margin while still catching a missing or extra position
// (which moves an average over n positions by ~1/n, >= 2.4e-4 at n = 4096, and far more at shorter
// lengths).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <stdexcept>
#include <vector>

#include "decode_attention.hpp"
#include "gpu_test_support.hpp"

namespace {

using namespace inflight::gpu;
using namespace inflight::gpu::testing;
using bf16 = __nv_bfloat16;

uint16_t bits(bf16 value) {
  uint16_t raw;
  std::memcpy(&raw, &value, sizeof raw);
  return raw;
}

float random_bf16(std::mt19937& rng, float low, float high) {
  return __bfloat162float(__float2bfloat16(std::uniform_real_distribution<float>(low, high)(rng)));
}

// A decode step's inputs on the host: cache, block tables, queries.
struct decode_problem {
  int32_t num_q_heads = 0, num_kv_heads = 0, head_dim = 0, block_size = 0;
  std::vector<int32_t> seq_lens;
  int32_t block_table_stride = 0;
  int32_t num_blocks = 0;
  std::vector<int32_t> block_tables;  // [num_seqs][block_table_stride]
  int64_t q_row_stride = 0;           // >= num_q_heads * head_dim; the rest of a row is filler
  std::vector<bf16> q;                // [num_seqs][q_row_stride]
  std::vector<bf16> k_cache, v_cache;  // [num_blocks][block_size][num_kv_heads][head_dim]

  int32_t num_seqs() const { return int32_t(seq_lens.size()); }
  int64_t kv_values() const { return int64_t(num_kv_heads) * head_dim; }
  int64_t slot(int32_t seq, int32_t position) const {
    return int64_t(block_tables[size_t(seq) * block_table_stride + position / block_size]) * block_size +
           position % block_size;
  }
};

// Blocks are handed out in a random order (non-contiguous tables); one extra block is all NaN and fills
// every table entry past a sequence's blocks; every cache slot no sequence position uses stays NaN.
decode_problem make_problem(std::mt19937& rng, int32_t num_q_heads, int32_t num_kv_heads, int32_t head_dim,
                            int32_t block_size, const std::vector<int32_t>& seq_lens, int32_t max_context,
                            int64_t q_row_stride, float q_range) {
  decode_problem p;
  p.num_q_heads = num_q_heads;
  p.num_kv_heads = num_kv_heads;
  p.head_dim = head_dim;
  p.block_size = block_size;
  p.seq_lens = seq_lens;
  p.block_table_stride = (max_context + block_size - 1) / block_size + 1;
  int32_t used_blocks = 0;
  for (int32_t length : seq_lens) used_blocks += (length + block_size - 1) / block_size;
  p.num_blocks = used_blocks + 1 + int32_t(rng() % 4);  // + the NaN block + a few never used
  std::vector<int32_t> order(p.num_blocks);
  for (int32_t b = 0; b < p.num_blocks; ++b) order[b] = b;
  std::shuffle(order.begin(), order.end(), rng);
  const int32_t nan_block = order.back();
  p.block_tables.assign(size_t(p.num_seqs()) * p.block_table_stride, nan_block);
  size_t next = 0;
  for (int32_t s = 0; s < p.num_seqs(); ++s) {
    for (int32_t b = 0; b < (seq_lens[s] + block_size - 1) / block_size; ++b) {
      p.block_tables[size_t(s) * p.block_table_stride + b] = order[next++];
    }
  }
  const bf16 nan_bf16 = __float2bfloat16(std::numeric_limits<float>::quiet_NaN());
  const size_t cache_values = size_t(p.num_blocks) * block_size * p.kv_values();
  p.k_cache.assign(cache_values, nan_bf16);
  p.v_cache.assign(cache_values, nan_bf16);
  for (int32_t s = 0; s < p.num_seqs(); ++s) {
    for (int32_t position = 0; position < seq_lens[s]; ++position) {
      const int64_t base = p.slot(s, position) * p.kv_values();
      for (int64_t i = 0; i < p.kv_values(); ++i) {
        p.k_cache[base + i] = __float2bfloat16(random_bf16(rng, -1.0f, 1.0f));
        p.v_cache[base + i] = __float2bfloat16(random_bf16(rng, -1.0f, 1.0f));
      }
    }
  }
  p.q_row_stride = q_row_stride;
  p.q.resize(size_t(p.num_seqs()) * q_row_stride);
  for (bf16& value : p.q) value = __float2bfloat16(random_bf16(rng, -q_range, q_range));
  return p;
}

// out[s][h][:] in double; a zero row for a zero length.
std::vector<double> reference_decode(const decode_problem& p, float scale) {
  const int32_t group = p.num_q_heads / p.num_kv_heads;
  std::vector<double> out(size_t(p.num_seqs()) * p.num_q_heads * p.head_dim, 0.0);
  std::vector<double> scores;
  for (int32_t s = 0; s < p.num_seqs(); ++s) {
    const int32_t length = p.seq_lens[s];
    scores.assign(length, 0.0);
    for (int32_t h = 0; h < p.num_q_heads; ++h) {
      const int32_t kv_head = h / group;
      const bf16* q = p.q.data() + size_t(s) * p.q_row_stride + size_t(h) * p.head_dim;
      double max_score = -INFINITY;
      for (int32_t position = 0; position < length; ++position) {
        const bf16* k = p.k_cache.data() + p.slot(s, position) * p.kv_values() + int64_t(kv_head) * p.head_dim;
        double dot = 0.0;
        for (int32_t d = 0; d < p.head_dim; ++d) dot += double(__bfloat162float(q[d])) * __bfloat162float(k[d]);
        scores[position] = dot * scale;
        max_score = std::max(max_score, scores[position]);
      }
      double sum = 0.0;
      for (double& score : scores) sum += (score = std::exp(score - max_score));
      double* o = out.data() + (size_t(s) * p.num_q_heads + h) * p.head_dim;
      for (int32_t position = 0; position < length; ++position) {
        const bf16* v = p.v_cache.data() + p.slot(s, position) * p.kv_values() + int64_t(kv_head) * p.head_dim;
        for (int32_t d = 0; d < p.head_dim; ++d) o[d] += scores[position] / sum * __bfloat162float(v[d]);
      }
    }
  }
  return out;
}

// The problem on the device, and decode_attention over any run of its sequences.
struct device_problem {
  explicit device_problem(const decode_problem& p)
      : q(p.q), k_cache(p.k_cache), v_cache(p.v_cache), block_tables(p.block_tables), seq_lens(p.seq_lens) {}
  device_buffer<bf16> q, k_cache, v_cache;
  device_buffer<int32_t> block_tables, seq_lens;
};

std::vector<bf16> run_decode(const decode_problem& p, const device_problem& d, int32_t first_seq, int32_t num_seqs,
                             int32_t max_context, float scale) {
  const size_t out_values = size_t(num_seqs) * p.num_q_heads * p.head_dim;
  // NaN-filled, so a row the kernels fail to write shows up.
  device_buffer<bf16> out(std::vector<bf16>(out_values, __float2bfloat16(std::numeric_limits<float>::quiet_NaN())));
  const size_t workspace_bytes =
      decode_attention_workspace_bytes(num_seqs, p.num_q_heads, p.head_dim, max_context);
  device_buffer<float> workspace(workspace_bytes / sizeof(float) + 1);
  decode_attention_args args;
  args.q = d.q.get() + size_t(first_seq) * p.q_row_stride;
  args.q_row_stride = p.q_row_stride;
  args.k_cache = d.k_cache.get();
  args.v_cache = d.v_cache.get();
  args.block_tables = d.block_tables.get() + size_t(first_seq) * p.block_table_stride;
  args.block_table_stride = p.block_table_stride;
  args.seq_lens = d.seq_lens.get() + first_seq;
  args.num_seqs = num_seqs;
  args.max_context = max_context;
  args.num_q_heads = p.num_q_heads;
  args.num_kv_heads = p.num_kv_heads;
  args.head_dim = p.head_dim;
  args.block_size = p.block_size;
  args.scale = scale;
  args.workspace = workspace.get();
  args.workspace_bytes = workspace_bytes;
  args.out = out.get();
  decode_attention(args, nullptr);
  return out.download();
}

void check_against_reference(const decode_problem& p, const std::vector<bf16>& out, float scale) {
  const std::vector<double> reference = reference_decode(p, scale);
  REQUIRE(out.size() == reference.size());
  const size_t row_values = size_t(p.num_q_heads) * p.head_dim;
  for (int32_t s = 0; s < p.num_seqs(); ++s) {
    size_t bad = 0, worst = 0;
    double worst_excess = -INFINITY;
    for (size_t i = s * row_values; i < (s + 1) * row_values; ++i) {
      const double device = __bfloat162float(out[i]);
      const double error = std::abs(device - reference[i]);
      const double allowed = 1e-2 * std::abs(reference[i]) + 2e-4;
      const bool ok = p.seq_lens[s] == 0 ? bits(out[i]) == 0 : error <= allowed;  // NaN fails too
      bad += !ok;
      const double excess = std::isnan(error) ? INFINITY : error - allowed;
      if (excess > worst_excess) worst_excess = excess, worst = i;
    }
    INFO("seq " << s << " length " << p.seq_lens[s] << " q heads " << p.num_q_heads << " kv heads " << p.num_kv_heads
                << " head_dim " << p.head_dim << " block_size " << p.block_size << ": " << bad
                << " values off; worst index " << worst % row_values << " device " << __bfloat162float(out[worst])
                << " reference " << reference[worst]);
    CHECK(bad == 0);
  }
}

struct head_config {
  int32_t num_q_heads, num_kv_heads, head_dim;
};

// GQA 3 and 4 with both head sizes; the first two are SmolLM2-135M and Llama-3.1-8B.
const head_config head_configs[] = {{9, 3, 64}, {32, 8, 128}, {6, 2, 128}, {8, 2, 64}};

TEST_CASE("decode attention: lengths around block and split boundaries, mixed in one batch, NaN in unused slots") {
  INFLIGHT_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(31337);
  for (const head_config& c : head_configs) {
    // Short and long sequences together, plus a padding row (length 0), in random order.
    std::vector<int32_t> lengths = {1, 15, 16, 17, 511, 512, 513, 1000, 4096, 0};
    std::shuffle(lengths.begin(), lengths.end(), rng);
    const int32_t max_context = 4096 + 100;  // one more split in the grid than any sequence uses
    const decode_problem p = make_problem(rng, c.num_q_heads, c.num_kv_heads, c.head_dim, 16, lengths, max_context,
                                          int64_t(c.num_q_heads) * c.head_dim, 2.0f);
    const device_problem d(p);
    const float scale = 1.0f / std::sqrt(float(c.head_dim));
    check_against_reference(p, run_decode(p, d, 0, p.num_seqs(), max_context, scale), scale);
  }
}

TEST_CASE("decode attention: block_size 32, q read from the fused QKV rows, peaky softmax") {
  INFLIGHT_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(8);
  for (const head_config& c : head_configs) {
    std::vector<int32_t> lengths = {31, 32, 33, 1024, 1025, 2047, 1};
    std::shuffle(lengths.begin(), lengths.end(), rng);
    const int64_t fused_stride = int64_t(c.num_q_heads + 2 * c.num_kv_heads) * c.head_dim;
    const decode_problem p =
        make_problem(rng, c.num_q_heads, c.num_kv_heads, c.head_dim, 32, lengths, 2048, fused_stride, 8.0f);
    const device_problem d(p);
    const float scale = 1.0f / std::sqrt(float(c.head_dim));
    check_against_reference(p, run_decode(p, d, 0, p.num_seqs(), 2048, scale), scale);
  }
}

TEST_CASE("decode attention: random batches") {
  INFLIGHT_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(4242);
  for (int trial = 0; trial < 8; ++trial) {
    const head_config& c = head_configs[rng() % 4];
    const int32_t num_seqs = 1 + int32_t(rng() % 12);
    std::vector<int32_t> lengths(num_seqs);
    int32_t longest = 1;
    for (int32_t& length : lengths) longest = std::max(longest, length = 1 + int32_t(rng() % 3000));
    const int32_t max_context = longest + int32_t(rng() % 700);
    const int32_t block_size = rng() % 2 ? 16 : 32;
    const decode_problem p = make_problem(rng, c.num_q_heads, c.num_kv_heads, c.head_dim, block_size, lengths,
                                          max_context, int64_t(c.num_q_heads) * c.head_dim, 4.0f);
    const device_problem d(p);
    const float scale = 1.0f / std::sqrt(float(c.head_dim));
    INFO("trial " << trial << " max_context " << max_context);
    check_against_reference(p, run_decode(p, d, 0, num_seqs, max_context, scale), scale);
  }
}

TEST_CASE("decode attention is batch-invariant: a sequence alone and in a batch give the same bits") {
  INFLIGHT_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(777);
  for (const head_config& c : head_configs) {
    const std::vector<int32_t> lengths = {700, 1, 4096, 513, 37, 2500, 512};
    const int32_t max_context = 5000;
    const decode_problem p = make_problem(rng, c.num_q_heads, c.num_kv_heads, c.head_dim, 16, lengths, max_context,
                                          int64_t(c.num_q_heads) * c.head_dim, 2.0f);
    const device_problem d(p);
    const float scale = 1.0f / std::sqrt(float(c.head_dim));
    const std::vector<bf16> batch = run_decode(p, d, 0, p.num_seqs(), max_context, scale);
    const size_t row_values = size_t(c.num_q_heads) * c.head_dim;
    for (int32_t s = 0; s < p.num_seqs(); ++s) {
      // Alone, with the smallest grid that fits it, and inside a sub-batch starting at s.
      const std::vector<bf16> alone = run_decode(p, d, s, 1, lengths[s], scale);
      const std::vector<bf16> tail = run_decode(p, d, s, p.num_seqs() - s, max_context, scale);
      size_t differ_alone = 0, differ_tail = 0;
      for (size_t i = 0; i < row_values; ++i) {
        differ_alone += bits(alone[i]) != bits(batch[s * row_values + i]);
        differ_tail += bits(tail[i]) != bits(batch[s * row_values + i]);
      }
      INFO("head_dim " << c.head_dim << " q heads " << c.num_q_heads << " seq " << s << " length " << lengths[s]);
      CHECK(differ_alone == 0);
      CHECK(differ_tail == 0);
    }
  }
}

TEST_CASE("decode attention rejects bad arguments") {
  INFLIGHT_REQUIRE_CUDA_DEVICE();
  device_buffer<bf16> buffer(1 << 16);
  device_buffer<int32_t> ints(1024);
  device_buffer<float> workspace(1 << 16);
  decode_attention_args good;
  good.q = buffer.get();
  good.q_row_stride = 9 * 64;
  good.k_cache = buffer.get();
  good.v_cache = buffer.get();
  good.block_tables = ints.get();
  good.block_table_stride = 64;
  good.seq_lens = ints.get();
  good.num_seqs = 1;
  good.max_context = 1024;
  good.num_q_heads = 9;
  good.num_kv_heads = 3;
  good.head_dim = 64;
  good.block_size = 16;
  good.scale = 0.125f;
  good.workspace = workspace.get();
  good.workspace_bytes = decode_attention_workspace_bytes(1, 9, 64, 1024);
  good.out = buffer.get();
  REQUIRE(good.workspace_bytes > 0);
  REQUIRE(good.workspace_bytes <= workspace.size() * sizeof(float));

  auto with = [&](auto change) {
    decode_attention_args args = good;
    change(args);
    return args;
  };
  CHECK_THROWS_AS(decode_attention(with([](auto& a) { a.head_dim = 96, a.q_row_stride = 9 * 96; }), nullptr),
                  std::invalid_argument);
  CHECK_THROWS_AS(decode_attention(with([](auto& a) { a.num_q_heads = 8; }), nullptr), std::invalid_argument);
  CHECK_THROWS_AS(decode_attention(with([](auto& a) { a.num_q_heads = 48, a.q_row_stride = 48 * 64; }), nullptr),
                  std::invalid_argument);  // GQA ratio 16
  CHECK_THROWS_AS(decode_attention(with([](auto& a) { a.workspace_bytes -= 4; }), nullptr), std::invalid_argument);
  CHECK_THROWS_AS(decode_attention(with([](auto& a) { a.block_table_stride = 63; }), nullptr),
                  std::invalid_argument);
  CHECK_THROWS_AS(decode_attention(with([](auto& a) { a.q_row_stride = 9 * 64 - 8; }), nullptr),
                  std::invalid_argument);
  // One split needs no workspace.
  CHECK(decode_attention_workspace_bytes(4, 32, 128, 512) == 0);
  CHECK(decode_attention_workspace_bytes(4, 32, 128, 513) == size_t(4) * 32 * 2 * (128 + 2) * sizeof(float));
}

}  // namespace
