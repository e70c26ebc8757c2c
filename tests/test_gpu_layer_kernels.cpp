// gpu/layer_kernels: each kernel against a host reference computed in double from the bf16-rounded inputs
// (what the device sees), for random shapes from fixed seeds.
//
// Tolerances: a bf16 output carries a relative rounding error of up to 2^-9, and a device result that is
// a few fp32 ulps off the exact value can round to the neighbouring bf16 (2^-8..2^-7 relative). So the
// rounded outputs are checked to |device - reference| <= 1e-2 * |reference| + 1e-3 (absolute term for
// results near zero, where cancellation makes the relative error meaningless). Copies, gathers, the
// residual sum (the device does the same single fp32 add and rounding as the host) and cache writes are
// checked bit for bit.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <stdexcept>
#include <vector>

#include "gpu_test_support.hpp"
#include "layer_kernels.hpp"

namespace {

using namespace inflight::gpu;
using namespace inflight::gpu::testing;
using bf16 = __nv_bfloat16;

std::vector<float> random_bf16_values(std::mt19937& rng, size_t count, float low, float high) {
  std::uniform_real_distribution<float> dist(low, high);
  std::vector<float> values(count);
  for (float& value : values) value = dist(rng);
  return round_to_bf16(values);
}

uint16_t bits(bf16 value) {
  uint16_t raw;
  std::memcpy(&raw, &value, sizeof raw);
  return raw;
}

// Counts elements outside the tolerance and reports the worst one.
void check_close(const std::vector<float>& device, const std::vector<double>& reference, double relative,
                 double absolute, const char* what) {
  REQUIRE(device.size() == reference.size());
  size_t bad = 0, worst = 0;
  double worst_excess = -1.0;
  for (size_t i = 0; i < device.size(); ++i) {
    const double error = std::abs(double(device[i]) - reference[i]);
    const double allowed = relative * std::abs(reference[i]) + absolute;
    if (!(error <= allowed)) ++bad;  // NaN counts as bad
    const double excess = std::isnan(error) ? 1e30 : error - allowed;
    if (excess > worst_excess) worst_excess = excess, worst = i;
  }
  INFO(what << ": " << bad << " of " << device.size() << " outside tolerance; worst index " << worst
            << " device " << device[worst] << " reference " << reference[worst]);
  CHECK(bad == 0);
}

TEST_CASE("embed_tokens copies table rows, vectorised and scalar widths, clamping bad ids") {
  INFLIGHT_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(1234);
  for (const int32_t hidden : {576, 4096, 8, 100, 37}) {  // 100 and 37: not multiples of 8, scalar path
    const int32_t vocab = 1 + int32_t(rng() % 700);
    const int32_t num_tokens = 1 + int32_t(rng() % 40);
    const std::vector<bf16> table = to_bf16(random_bf16_values(rng, size_t(vocab) * hidden, -2.0f, 2.0f));
    std::vector<int32_t> ids(num_tokens);
    for (int32_t& id : ids) id = int32_t(rng() % vocab);
    ids[0] = -5;          // clamps to 0
    ids.back() = vocab + 3;  // clamps to vocab - 1
    device_buffer<bf16> table_d(table);
    device_buffer<int32_t> ids_d(ids);
    device_buffer<bf16> out_d(size_t(num_tokens) * hidden);
    embed_tokens(ids_d.get(), num_tokens, table_d.get(), vocab, hidden, out_d.get(), nullptr);
    const std::vector<bf16> out = out_d.download();
    size_t mismatches = 0;
    for (int32_t t = 0; t < num_tokens; ++t) {
      const int32_t row = std::min(std::max(ids[t], 0), vocab - 1);
      for (int32_t i = 0; i < hidden; ++i) {
        mismatches += bits(out[size_t(t) * hidden + i]) != bits(table[size_t(row) * hidden + i]);
      }
    }
    INFO("hidden " << hidden << " vocab " << vocab << " tokens " << num_tokens);
    CHECK(mismatches == 0);
  }
}

TEST_CASE("gather_rows picks the listed rows") {
  INFLIGHT_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(99);
  for (int trial = 0; trial < 6; ++trial) {
    const int32_t cols = trial == 5 ? 12 : 8 * (1 + int32_t(rng() % 600));
    const int32_t num_src_rows = 1 + int32_t(rng() % 64);
    const int32_t num_rows = 1 + int32_t(rng() % 16);
    const std::vector<bf16> src = to_bf16(random_bf16_values(rng, size_t(num_src_rows) * cols, -3.0f, 3.0f));
    std::vector<int32_t> rows(num_rows);
    for (int32_t& row : rows) row = int32_t(rng() % num_src_rows);
    device_buffer<bf16> src_d(src);
    device_buffer<int32_t> rows_d(rows);
    device_buffer<bf16> out_d(size_t(num_rows) * cols);
    gather_rows(src_d.get(), num_src_rows, cols, rows_d.get(), num_rows, out_d.get(), nullptr);
    const std::vector<bf16> out = out_d.download();
    size_t mismatches = 0;
    for (int32_t r = 0; r < num_rows; ++r) {
      for (int32_t c = 0; c < cols; ++c) mismatches += bits(out[size_t(r) * cols + c]) != bits(src[size_t(rows[r]) * cols + c]);
    }
    INFO("cols " << cols << " rows " << num_rows);
    CHECK(mismatches == 0);
  }
}

// Host RMSNorm of one row (double), from already-rounded values.
std::vector<double> reference_rms_norm(const std::vector<float>& row, const std::vector<float>& weight, float eps) {
  double sum_squares = 0.0;
  for (float value : row) sum_squares += double(value) * value;
  const double inverse_rms = 1.0 / std::sqrt(sum_squares / double(row.size()) + double(eps));
  std::vector<double> out(row.size());
  for (size_t i = 0; i < row.size(); ++i) out[i] = double(row[i]) * inverse_rms * weight[i];
  return out;
}

TEST_CASE("add_rms_norm and rms_norm match the host reference (hidden 576, 4096, random, scalar path)") {
  INFLIGHT_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(77);
  const float eps = 1e-5f;
  for (const int32_t hidden : {576, 4096, 8 * (1 + int32_t(rng() % 900)), 8, 100}) {
    const int32_t num_tokens = 1 + int32_t(rng() % 20);
    const size_t count = size_t(num_tokens) * hidden;
    const std::vector<float> residual = random_bf16_values(rng, count, -4.0f, 4.0f);
    const std::vector<float> x = random_bf16_values(rng, count, -4.0f, 4.0f);
    const std::vector<float> weight = random_bf16_values(rng, hidden, 0.5f, 1.5f);
    device_buffer<bf16> residual_d(to_bf16(residual)), x_d(to_bf16(x)), weight_d(to_bf16(weight));
    device_buffer<bf16> out_d(count);
    INFO("hidden " << hidden << " tokens " << num_tokens);

    // With x: the residual becomes bf16(residual + x), and the norm is of that.
    add_rms_norm(residual_d.get(), x_d.get(), weight_d.get(), num_tokens, hidden, eps, out_d.get(), nullptr);
    const std::vector<bf16> new_residual = residual_d.download();
    std::vector<float> expected_residual(count);
    for (size_t i = 0; i < count; ++i) expected_residual[i] = residual[i] + x[i];  // fp32 add, as the device
    const std::vector<bf16> expected_residual_bf16 = to_bf16(expected_residual);
    size_t residual_mismatches = 0;
    for (size_t i = 0; i < count; ++i) residual_mismatches += bits(new_residual[i]) != bits(expected_residual_bf16[i]);
    CHECK(residual_mismatches == 0);
    std::vector<double> reference;
    const std::vector<float> summed = to_float(expected_residual_bf16);
    for (int32_t t = 0; t < num_tokens; ++t) {
      const std::vector<float> row(summed.begin() + size_t(t) * hidden, summed.begin() + size_t(t + 1) * hidden);
      const std::vector<double> normed = reference_rms_norm(row, weight, eps);
      reference.insert(reference.end(), normed.begin(), normed.end());
    }
    check_close(to_float(out_d.download()), reference, 1e-2, 1e-3, "add_rms_norm");

    // Without x (first layer): residual untouched, out = norm(residual).
    add_rms_norm(residual_d.get(), nullptr, weight_d.get(), num_tokens, hidden, eps, out_d.get(), nullptr);
    const std::vector<bf16> unchanged = residual_d.download();
    size_t changed = 0;
    for (size_t i = 0; i < count; ++i) changed += bits(unchanged[i]) != bits(expected_residual_bf16[i]);
    CHECK(changed == 0);
    check_close(to_float(out_d.download()), reference, 1e-2, 1e-3, "add_rms_norm without x");

    // Plain rms_norm of x.
    rms_norm(x_d.get(), weight_d.get(), num_tokens, hidden, eps, out_d.get(), nullptr);
    reference.clear();
    for (int32_t t = 0; t < num_tokens; ++t) {
      const std::vector<float> row(x.begin() + size_t(t) * hidden, x.begin() + size_t(t + 1) * hidden);
      const std::vector<double> normed = reference_rms_norm(row, weight, eps);
      reference.insert(reference.end(), normed.begin(), normed.end());
    }
    check_close(to_float(out_d.download()), reference, 1e-2, 1e-3, "rms_norm");
  }
}

struct rope_case {
  int32_t num_q_heads, num_kv_heads, head_dim, rope_dims, extra_row_stride;
  float base;
  bool freq_factors;
};

TEST_CASE("rope_and_write_kv rotates adjacent pairs and writes K/V to the slots, skipping padding rows") {
  INFLIGHT_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(2024);
  const rope_case cases[] = {
      {9, 3, 64, 64, 0, 100000.0f, false},   // SmolLM2-135M
      {32, 8, 128, 128, 0, 500000.0f, true},  // Llama-3.1-8B (frequency factors)
      {4, 2, 128, 64, 16, 10000.0f, false},   // partial rotary, padded row stride
      {6, 2, 64, 40, 8, 10000.0f, true},      // rope_dims not a multiple of 8
  };
  const bf16 nan_bf16 = __float2bfloat16(std::numeric_limits<float>::quiet_NaN());
  for (const rope_case& c : cases) {
    const int32_t num_tokens = 1 + int32_t(rng() % 40);
    const int32_t block_size = 16, num_blocks = 8;
    const int64_t num_slots = int64_t(block_size) * num_blocks;
    const int64_t row_stride = int64_t(c.num_q_heads + 2 * c.num_kv_heads) * c.head_dim + c.extra_row_stride;
    const int64_t kv_values = int64_t(c.num_kv_heads) * c.head_dim;
    INFO("q heads " << c.num_q_heads << " kv heads " << c.num_kv_heads << " head_dim " << c.head_dim << " rope_dims "
                    << c.rope_dims << " tokens " << num_tokens);

    // inv_freq as the backend will precompute it (model/cpu_attention.cpp's rope_angles).
    const float freq_scale = 1.0f;
    std::vector<float> inv_freq(c.rope_dims / 2);
    for (int32_t i = 0; i < c.rope_dims / 2; ++i) {
      const float factor = c.freq_factors ? 1.0f + float(rng() % 7) : 1.0f;
      inv_freq[i] = freq_scale * std::pow(c.base, -2.0f * float(i) / float(c.rope_dims)) / factor;
    }
    // Positions up to 8192 (angles of thousands of radians); distinct slots in random order; some padding.
    std::vector<int32_t> positions(num_tokens);
    std::vector<int64_t> slots(num_tokens);
    std::vector<int64_t> free_slots(num_slots);
    for (int64_t s = 0; s < num_slots; ++s) free_slots[s] = s;
    std::shuffle(free_slots.begin(), free_slots.end(), rng);
    for (int32_t t = 0; t < num_tokens; ++t) {
      positions[t] = t == 0 ? 8192 : (t == 1 ? 0 : int32_t(rng() % 8193));
      slots[t] = (t % 5 == 3) ? -1 : free_slots[t];
    }
    const std::vector<float> qkv = random_bf16_values(rng, size_t(num_tokens) * row_stride, -2.0f, 2.0f);
    device_buffer<bf16> qkv_d(to_bf16(qkv));
    device_buffer<int32_t> positions_d(positions);
    device_buffer<int64_t> slots_d(slots);
    device_buffer<float> inv_freq_d(inv_freq.empty() ? std::vector<float>{0.0f} : inv_freq);
    const std::vector<bf16> nan_cache(size_t(num_slots * kv_values), nan_bf16);
    device_buffer<bf16> k_cache_d(nan_cache), v_cache_d(nan_cache);

    rope_and_write_kv(qkv_d.get(), row_stride, num_tokens, c.num_q_heads, c.num_kv_heads, c.head_dim, c.rope_dims,
                      positions_d.get(), inv_freq_d.get(), slots_d.get(), k_cache_d.get(), v_cache_d.get(), num_slots,
                      nullptr);
    const std::vector<bf16> qkv_out = qkv_d.download();
    const std::vector<bf16> k_cache = k_cache_d.download(), v_cache = v_cache_d.download();

    // Reference rotation (double) of q and k heads; v and padding rows unchanged.
    std::vector<double> reference(qkv.begin(), qkv.end());
    for (int32_t t = 0; t < num_tokens; ++t) {
      if (slots[t] < 0) continue;
      for (int32_t head = 0; head < c.num_q_heads + c.num_kv_heads; ++head) {
        const size_t base = size_t(t) * row_stride + size_t(head) * c.head_dim;
        for (int32_t i = 0; i < c.rope_dims / 2; ++i) {
          const float angle = float(positions[t]) * inv_freq[i];  // the same fp32 product as the device
          const double cos_a = std::cos(double(angle)), sin_a = std::sin(double(angle));
          const double x0 = qkv[base + 2 * i], x1 = qkv[base + 2 * i + 1];
          reference[base + 2 * i] = x0 * cos_a - x1 * sin_a;
          reference[base + 2 * i + 1] = x0 * sin_a + x1 * cos_a;
        }
      }
    }
    check_close(to_float(qkv_out), reference, 1e-2, 1e-3, "rotated qkv");
    // Untouched values (v, dims >= rope_dims, padding rows, row padding) are bit-identical.
    const std::vector<bf16> qkv_in = to_bf16(qkv);
    size_t untouched_changed = 0;
    for (int32_t t = 0; t < num_tokens; ++t) {
      for (int64_t i = 0; i < row_stride; ++i) {
        const int64_t head = i / c.head_dim, dim = i % c.head_dim;
        const bool rotated = slots[t] >= 0 && head < c.num_q_heads + c.num_kv_heads && dim < c.rope_dims;
        if (!rotated) untouched_changed += bits(qkv_out[t * row_stride + i]) != bits(qkv_in[t * row_stride + i]);
      }
    }
    CHECK(untouched_changed == 0);

    // Cache: written slots hold exactly the rotated k and the v of their token; every other slot is NaN.
    std::vector<int32_t> token_of_slot(num_slots, -1);
    for (int32_t t = 0; t < num_tokens; ++t) {
      if (slots[t] >= 0) token_of_slot[slots[t]] = t;
    }
    size_t cache_mismatches = 0, nan_lost = 0;
    for (int64_t slot = 0; slot < num_slots; ++slot) {
      const int32_t t = token_of_slot[slot];
      for (int64_t i = 0; i < kv_values; ++i) {
        const bf16 k = k_cache[slot * kv_values + i], v = v_cache[slot * kv_values + i];
        if (t < 0) {
          nan_lost += !std::isnan(__bfloat162float(k)) + !std::isnan(__bfloat162float(v));
        } else {
          const int64_t k_index = t * row_stride + int64_t(c.num_q_heads) * c.head_dim + i;
          cache_mismatches += bits(k) != bits(qkv_out[k_index]);
          cache_mismatches += bits(v) != bits(qkv_in[k_index + kv_values]);
        }
      }
    }
    CHECK(cache_mismatches == 0);
    CHECK(nan_lost == 0);
  }
}

TEST_CASE("silu_mul matches the host reference") {
  INFLIGHT_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(5);
  for (const int32_t ffn : {1536, 14336, 8 * (1 + int32_t(rng() % 700)), 20}) {  // 20: scalar path
    const int32_t num_tokens = 1 + int32_t(rng() % (ffn > 4096 ? 4 : 24));
    const std::vector<float> gate_up = random_bf16_values(rng, size_t(num_tokens) * 2 * ffn, -12.0f, 12.0f);
    device_buffer<bf16> gate_up_d(to_bf16(gate_up));
    device_buffer<bf16> out_d(size_t(num_tokens) * ffn);
    silu_mul(gate_up_d.get(), num_tokens, ffn, out_d.get(), nullptr);
    std::vector<double> reference(size_t(num_tokens) * ffn);
    for (int32_t t = 0; t < num_tokens; ++t) {
      for (int32_t j = 0; j < ffn; ++j) {
        const double gate = gate_up[size_t(t) * 2 * ffn + j], up = gate_up[size_t(t) * 2 * ffn + ffn + j];
        reference[size_t(t) * ffn + j] = gate / (1.0 + std::exp(-gate)) * up;
      }
    }
    INFO("ffn " << ffn << " tokens " << num_tokens);
    check_close(to_float(out_d.download()), reference, 1e-2, 1e-3, "silu_mul");
  }
}

TEST_CASE("layer kernel launchers reject bad arguments") {
  INFLIGHT_REQUIRE_CUDA_DEVICE();
  device_buffer<bf16> buffer(4096);
  device_buffer<int32_t> ints(16);
  device_buffer<int64_t> slots(16);
  device_buffer<float> floats(64);
  CHECK_THROWS_AS(embed_tokens(ints.get(), 1, buffer.get(), 0, 8, buffer.get(), nullptr), std::invalid_argument);
  CHECK_THROWS_AS(add_rms_norm(buffer.get(), nullptr, buffer.get(), 1, 0, 1e-5f, buffer.get() + 8, nullptr),
                  std::invalid_argument);
  CHECK_THROWS_AS(add_rms_norm(buffer.get(), nullptr, buffer.get(), 1, 8, 1e-5f, buffer.get(), nullptr),
                  std::invalid_argument);  // out aliases residual
  CHECK_THROWS_AS(rope_and_write_kv(buffer.get(), 8 * 12, 1, 2, 1, 12, 12, ints.get(), floats.get(), slots.get(),
                                    buffer.get(), buffer.get(), 1, nullptr),
                  std::invalid_argument);  // head_dim 12 is not a multiple of 8
  CHECK_THROWS_AS(rope_and_write_kv(buffer.get(), 4 * 64, 1, 2, 1, 64, 66, ints.get(), floats.get(), slots.get(),
                                    buffer.get(), buffer.get(), 1, nullptr),
                  std::invalid_argument);  // rope_dims > head_dim
  CHECK_THROWS_AS(rope_and_write_kv(buffer.get(), 3 * 64, 1, 2, 1, 64, 64, ints.get(), floats.get(), slots.get(),
                                    buffer.get(), buffer.get(), 1, nullptr),
                  std::invalid_argument);  // row stride too small for q|k|v
  CHECK_THROWS_AS(silu_mul(buffer.get(), 1, 0, buffer.get(), nullptr), std::invalid_argument);
  // Zero rows: nothing to do, no launch, no error.
  CHECK_NOTHROW(silu_mul(buffer.get(), 0, 8, buffer.get(), nullptr));
  CHECK_NOTHROW(rms_norm(buffer.get(), buffer.get(), 0, 8, 1e-5f, buffer.get() + 8, nullptr));
}

}  // namespace
