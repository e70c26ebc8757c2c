// The quantized matmul kernels (model/quant_dot.cpp) against references written here from the block
// layouts of ggml-common.h:
//  * quantize_activations on hand-computed vectors (fp16 scale, round half to even, ds = fp16(d * sum));
//  * matmul for Q4_0/Q4_1/Q8_0 against the exact integer formula (tight: float summation order only) and
//    against the float dot product of dequantized weights and the original activations (loose: bounded
//    by the activation quantization error);
//  * tile and row-range invariance, bit for bit: what makes a sequence's logits independent of its batch;
//  * quantize_row_q8_0 round-trips through dequantize_row.
#include <doctest/doctest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "inflight/ggml_type.hpp"
#include "inflight/half.hpp"
#include "inflight/quant.hpp"
#include "quant_blocks.hpp"
#include "quant_dot.hpp"

using namespace inflight;
using namespace inflight::quant;
using kernels::act_block;

namespace {

constexpr double unit_roundoff = 1.0 / (1 << 24);  // float epsilon / 2

// A random fp16 scale built from its bits (not through fp32_to_fp16): sign, exponent 2^-12..2^-2
// (with the odd subnormal and zero), random mantissa.
uint16_t random_fp16_scale(std::mt19937& rng, bool allow_negative) {
  const uint16_t exponent = uint16_t(std::uniform_int_distribution<int>(0, 13)(rng));
  const uint16_t mantissa = uint16_t(rng() & 0x3ffu);
  const uint16_t sign = allow_negative && (rng() & 1u) ? 0x8000u : 0u;
  return uint16_t(sign | (exponent << 10) | mantissa);
}

// A weight matrix of random blocks, with the integer quants and scales kept for the references.
struct random_matrix {
  ggml_type type;
  int64_t rows, cols;
  size_t row_bytes;
  std::vector<uint8_t> data;
  std::vector<int32_t> quants;  // rows * cols: Q4_0 value - 8 in [-8, 7], Q4_1 in [0, 15], Q8_0 in [-128, 127]
  std::vector<float> scales;    // rows * cols/32
  std::vector<float> mins;      // Q4_1 only

  kernels::weight_matrix view() const { return {type, data.data(), rows, cols, row_bytes}; }
};

random_matrix make_matrix(ggml_type type, int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  random_matrix m{type, rows, cols, inflight::row_bytes(type, size_t(cols)), {}, {}, {}, {}};
  m.data.resize(m.row_bytes * size_t(rows));
  m.quants.resize(size_t(rows * cols));
  const int64_t num_blocks = cols / 32;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t b = 0; b < num_blocks; ++b) {
      int32_t* q = m.quants.data() + r * cols + b * 32;
      const uint16_t d = random_fp16_scale(rng, type != ggml_type::q4_0 || (rng() & 3u) == 0);
      m.scales.push_back(fp16_to_fp32(d));
      uint8_t* dst = m.data.data() + size_t(r) * m.row_bytes;
      // Nibble layout (ggml-common.h): byte j holds value j in its low nibble, value j + 16 in its high one.
      if (type == ggml_type::q8_0) {
        block_q8_0 block{d, {}};
        for (int i = 0; i < 32; ++i) {
          q[i] = std::uniform_int_distribution<int>(-128, 127)(rng);
          block.qs[i] = int8_t(q[i]);
        }
        std::memcpy(dst + size_t(b) * sizeof block, &block, sizeof block);
      } else {
        uint8_t raw[32];
        for (auto& value : raw) value = uint8_t(rng() & 0x0fu);
        uint8_t packed[16];
        for (int j = 0; j < 16; ++j) packed[j] = uint8_t(raw[j] | (raw[j + 16] << 4));
        for (int i = 0; i < 32; ++i) q[i] = type == ggml_type::q4_0 ? int32_t(raw[i]) - 8 : int32_t(raw[i]);
        if (type == ggml_type::q4_0) {
          block_q4_0 block{d, {}};
          std::memcpy(block.qs, packed, 16);
          std::memcpy(dst + size_t(b) * sizeof block, &block, sizeof block);
        } else {
          const uint16_t min = random_fp16_scale(rng, true);
          m.mins.push_back(fp16_to_fp32(min));
          block_q4_1 block{d, min, {}};
          std::memcpy(block.qs, packed, 16);
          std::memcpy(dst + size_t(b) * sizeof block, &block, sizeof block);
        }
      }
    }
  }
  return m;
}

// Random activations for `tokens` rows of `cols` values: mostly N(0, 1), some outliers, one all-zero block
// (scale 0) and one all-negative block.
std::vector<float> make_activations(int64_t tokens, int64_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(size_t(tokens * cols));
  for (auto& value : x) value = normal(rng) * ((rng() % 17) == 0 ? 20.0f : 1.0f);
  if (tokens > 1) std::fill_n(x.begin() + cols + 32, 32, 0.0f);
  for (int i = 0; i < 32; ++i) x[size_t(i)] = -std::fabs(x[size_t(i)]) - 0.01f;
  return x;
}

std::vector<act_block> quantize(const std::vector<float>& x) {
  std::vector<act_block> act(x.size() / 32);
  kernels::quantize_activations(x.data(), act.data(), int64_t(x.size()));
  return act;
}

struct reference_value {
  double value = 0;
  double magnitude = 0;
};

// sum over blocks of d_w * d_a * sum_i(q_w * q_a)  [+ m_w * ds_a for Q4_1], in double.
reference_value exact_reference(const random_matrix& m, const act_block* act_row, int64_t r) {
  reference_value ref;  // magnitude: sum of |terms|, the scale of float summation errors
  const int64_t num_blocks = m.cols / 32;
  for (int64_t b = 0; b < num_blocks; ++b) {
    const act_block& a = act_row[b];
    const int32_t* q = m.quants.data() + r * m.cols + b * 32;
    int64_t sumi = 0, sum_abs = 0;
    for (int i = 0; i < 32; ++i) {
      sumi += int64_t(q[i]) * a.qs[i];
      sum_abs += std::abs(int64_t(q[i]) * a.qs[i]);
    }
    const double scale = double(m.scales[size_t(r * num_blocks + b)]) * double(a.d);
    ref.value += scale * double(sumi);
    // The kernel sums partial products lane by lane: bound its rounding by the products' magnitudes, not
    // by |sumi|, which may cancel.
    ref.magnitude += std::fabs(scale) * double(sum_abs);
    if (m.type == ggml_type::q4_1) {
      const double min_term = double(m.mins[size_t(r * num_blocks + b)]) * double(a.ds);
      ref.value += min_term;
      ref.magnitude += std::fabs(min_term);
    }
  }
  return ref;
}

// dequantize_row(weights) . x in double, and a bound on how far the int8 kernel may be from it:
// per value |d_a * q_a - x| <= d0/2 + 127 * |fp16(d0) - d0| < 0.6 * d_a (d0 = amax/127), and for Q4_1
// |ds - d0 * sum| <= 2^-11 |ds| from ds's fp16 rounding.
struct float_reference {
  double value = 0;
  double bound = 0;
};

float_reference dequantized_reference(const random_matrix& m, const std::vector<float>& weight_row, const float* x,
                                      const act_block* act_row, int64_t r) {
  float_reference ref;
  double magnitude = 0;
  for (int64_t i = 0; i < m.cols; ++i) {
    ref.value += double(weight_row[size_t(i)]) * double(x[i]);
    magnitude += std::fabs(double(weight_row[size_t(i)]) * double(x[i]));
    ref.bound += std::fabs(double(weight_row[size_t(i)])) * 0.6 * double(act_row[i / 32].d);
  }
  if (m.type == ggml_type::q4_1) {
    for (int64_t b = 0; b < m.cols / 32; ++b) {
      ref.bound += std::fabs(double(m.mins[size_t(r * (m.cols / 32) + b)]) * double(act_row[b].ds)) / 1024.0;
    }
  }
  ref.bound += 1e-6 * magnitude + exact_reference(m, act_row, r).magnitude * 1e-6;
  return ref;
}

std::vector<float> dequantize_matrix(const random_matrix& m) {
  std::vector<float> out(size_t(m.rows * m.cols));
  for (int64_t r = 0; r < m.rows; ++r) {
    dequantize_row(m.type, m.data.data() + size_t(r) * m.row_bytes, out.data() + r * m.cols, m.cols);
  }
  return out;
}

uint32_t bits(float f) { return std::bit_cast<uint32_t>(f); }

std::string type_name(ggml_type type) { return type_traits(type).name; }

constexpr ggml_type direct_types[] = {ggml_type::q4_0, ggml_type::q4_1, ggml_type::q8_0};

}  // namespace

TEST_CASE("quantize_activations matches hand-computed blocks") {
  std::vector<float> x(4 * 32, 0.0f);
  // Block 0: amax 127 so d = 1 and q = nearbyint(x): halves go to the even neighbour.
  const float block0[] = {127.0f, -127.0f, 63.5f, 64.5f, 0.5f, 1.5f, 2.5f, -0.5f, -1.5f, -2.5f, 1.0f, 2.0f};
  std::copy(std::begin(block0), std::end(block0), x.begin());
  // Block 1: all zero. Block 2: amax 1, d = 1/127 rounded to fp16, 0.5 * 127 = 63.5 -> 64.
  const float block2[] = {-1.0f, 0.5f, -0.25f, 0.75f, 0.1f};
  std::copy(std::begin(block2), std::end(block2), x.begin() + 64);
  // Block 3: all negative, -(i + 1): amax 32 from a negative value, 127/32 = 3.96875 exactly.
  for (int i = 0; i < 32; ++i) x[size_t(96 + i)] = -float(i + 1);

  std::vector<act_block> act(4);
  kernels::quantize_activations(x.data(), act.data(), int64_t(x.size()));

  const int8_t expected0[] = {127, -127, 64, 64, 0, 2, 2, 0, -2, -2, 1, 2};
  CHECK(act[0].d == 1.0f);
  CHECK(act[0].ds == 131.0f);
  for (int i = 0; i < 32; ++i) {
    CAPTURE(i);
    CHECK(int(act[0].qs[i]) == (i < 12 ? int(expected0[i]) : 0));
  }

  CHECK(act[1].d == 0.0f);
  CHECK(act[1].ds == 0.0f);
  for (int i = 0; i < 32; ++i) CHECK(int(act[1].qs[i]) == 0);

  // fp16(1/127) = 2^-7 * (1 + 8/1024); ds = fp16(float(1/127) * 13) = 1677 * 2^-14.
  const int8_t expected2[] = {-127, 64, -32, 95, 13};
  CHECK(act[2].d == 0.00787353515625f);
  CHECK(act[2].ds == 0.10235595703125f);
  for (int i = 0; i < 32; ++i) {
    CAPTURE(i);
    CHECK(int(act[2].qs[i]) == (i < 5 ? int(expected2[i]) : 0));
  }

  // q_i = -round_half_even((i + 1) * 127 / 32), in integers; fp16(32/127) = 2^-2 * (1 + 8/1024);
  // sum = -2096, ds = fp16(-528.126) = -528.
  int32_t sum = 0;
  for (int i = 0; i < 32; ++i) {
    const int32_t numerator = (i + 1) * 127;
    int32_t q = numerator / 32;
    const int32_t remainder = numerator % 32;
    if (remainder > 16 || (remainder == 16 && q % 2 == 1)) ++q;
    CAPTURE(i);
    CHECK(int(act[3].qs[i]) == -q);
    sum -= q;
  }
  CHECK(sum == -2096);
  CHECK(int(act[3].qs[15]) == -64);  // 63.5 -> 64: ties to even, not away from zero
  CHECK(act[3].d == 0.251953125f);
  CHECK(act[3].ds == -528.0f);
}

TEST_CASE("quantize_activations on random blocks keeps its invariants") {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  constexpr int num_blocks = 256;
  std::vector<float> x(num_blocks * 32);
  for (int b = 0; b < num_blocks; ++b) {
    const float scale = std::ldexp(1.0f, int(rng() % 20) - 10);
    for (int i = 0; i < 32; ++i) x[size_t(b * 32 + i)] = normal(rng) * scale;
  }
  const auto act = quantize(x);
  for (int b = 0; b < num_blocks; ++b) {
    CAPTURE(b);
    const float* values = x.data() + b * 32;
    float amax = 0.0f;
    int argmax = 0;
    for (int i = 0; i < 32; ++i) {
      if (std::fabs(values[i]) > amax) { amax = std::fabs(values[i]); argmax = i; }
    }
    const float d0 = amax / 127.0f;
    // The stored scale is the fp16 rounding of amax/127: it decodes to itself and lies within half an fp16 ulp.
    CHECK(fp16_to_fp32(fp32_to_fp16(act[size_t(b)].d)) == act[size_t(b)].d);
    // Half an fp16 ulp: 2^-11 relative, or 2^-25 absolute where amax/127 is an fp16 subnormal.
    CHECK(std::fabs(act[size_t(b)].d - d0) <= std::max(d0 / 2048.0f, std::ldexp(1.0f, -25)));
    CHECK(std::abs(int(act[size_t(b)].qs[argmax])) == 127);
    int32_t sum = 0;
    for (int i = 0; i < 32; ++i) {
      const int q = act[size_t(b)].qs[i];
      CHECK(std::abs(q) <= 127);
      CHECK(std::fabs(double(q) - double(values[i]) * 127.0 / double(amax)) <= 0.5 + 1e-4);
      sum += q;
    }
    const double ds = double(d0) * double(sum);
    CHECK(fp16_to_fp32(fp32_to_fp16(act[size_t(b)].ds)) == act[size_t(b)].ds);
    CHECK(std::fabs(double(act[size_t(b)].ds) - ds) <= std::max(std::fabs(ds) / 2048.0, std::ldexp(1.0, -25)));
  }
}

TEST_CASE("matmul matches the integer reference and the float dot product") {
  constexpr int64_t rows = 37, cols = 256, max_tokens = 9;
  // Row ranges that start and end inside the kernel's 16-row chunks, and the whole matrix.
  const std::pair<int64_t, int64_t> ranges[] = {{0, rows}, {3, 29}, {17, 37}, {5, 6}, {15, 33}};
  for (const ggml_type type : direct_types) {
    const std::string name = type_name(type);
    CAPTURE(name);
    REQUIRE(kernels::has_direct_kernel(type));
    const random_matrix m = make_matrix(type, rows, cols, 100 + uint32_t(type));
    const std::vector<float> weights = dequantize_matrix(m);
    // The test's own packing agrees with dequantize_row (independently tested against ggml's layout).
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t i = 0; i < cols; ++i) {
        const size_t b = size_t(r * (cols / 32) + i / 32);
        const double expected = double(m.scales[b]) * m.quants[size_t(r * cols + i)] +
                                (type == ggml_type::q4_1 ? double(m.mins[b]) : 0.0);
        REQUIRE(std::fabs(weights[size_t(r * cols + i)] - expected) <= std::fabs(expected) * unit_roundoff);
      }
    }
    for (int64_t num_tokens = 1; num_tokens <= max_tokens; ++num_tokens) {
      CAPTURE(num_tokens);
      const std::vector<float> x = make_activations(num_tokens, cols, 1000 * uint32_t(type) + uint32_t(num_tokens));
      const auto act = quantize(x);
      for (const auto& [row_begin, row_end] : ranges) {
        CAPTURE(row_begin);
        CAPTURE(row_end);
        constexpr int64_t stride = rows + 3;  // rows of `out` are longer than the matrix: padding stays put
        constexpr float untouched = -12345.0f;
        std::vector<float> out(size_t(num_tokens * stride), untouched);
        kernels::matmul(m.view(), act.data(), num_tokens, out.data(), stride, row_begin, row_end);
        int64_t checked = 0;
        for (int64_t t = 0; t < num_tokens; ++t) {
          for (int64_t r = 0; r < stride; ++r) {
            const float got = out[size_t(t * stride + r)];
            if (r < row_begin || r >= row_end) {
              if (got != untouched) FAIL("wrote outside the row range: token " << t << " row " << r);
              continue;
            }
            const act_block* act_row = act.data() + t * (cols / 32);
            const reference_value exact = exact_reference(m, act_row, r);
            const double tolerance = double(cols / 32 + 8) * unit_roundoff * exact.magnitude;
            if (!(std::fabs(double(got) - exact.value) <= tolerance)) {
              FAIL_CHECK("token " << t << " row " << r << ": " << got << " vs exact " << exact.value
                                  << " (tolerance " << tolerance << ")");
            }
            const float_reference loose =
                dequantized_reference(m, {weights.begin() + r * cols, weights.begin() + (r + 1) * cols},
                                      x.data() + t * cols, act_row, r);
            if (!(std::fabs(double(got) - loose.value) <= loose.bound)) {
              FAIL_CHECK("token " << t << " row " << r << ": " << got << " vs float dot " << loose.value
                                  << " (bound " << loose.bound << ")");
            }
            ++checked;
          }
        }
        CHECK(checked == num_tokens * (row_end - row_begin));
      }
    }
  }
}

TEST_CASE("matmul result for a token is bit-identical at every tile position and row split") {
  constexpr int64_t rows = 37, cols = 96, total_tokens = 12;
  constexpr int64_t num_blocks = cols / 32;
  for (const ggml_type type : direct_types) {
    const std::string name = type_name(type);
    CAPTURE(name);
    const random_matrix m = make_matrix(type, rows, cols, 200 + uint32_t(type));
    const auto act = quantize(make_activations(total_tokens, cols, 300 + uint32_t(type)));

    // Each token alone: the reference every batched call must reproduce exactly.
    std::vector<float> alone(size_t(total_tokens * rows));
    for (int64_t t = 0; t < total_tokens; ++t) {
      kernels::matmul(m.view(), act.data() + t * num_blocks, 1, alone.data() + t * rows, rows, 0, rows);
    }

    // Windows [first, first + count): token t sits at position t - first of its call, so every token
    // lands at every tile slot (0..3) and in full and partial tiles, for batches of 1..9 and more.
    for (int64_t first = 0; first < total_tokens; ++first) {
      for (int64_t count = 1; first + count <= total_tokens; ++count) {
        std::vector<float> out(size_t(count * rows));
        kernels::matmul(m.view(), act.data() + first * num_blocks, count, out.data(), rows, 0, rows);
        for (int64_t i = 0; i < count; ++i) {
          for (int64_t r = 0; r < rows; ++r) {
            const float a = alone[size_t((first + i) * rows + r)], b = out[size_t(i * rows + r)];
            if (bits(a) != bits(b)) {
              FAIL_CHECK("token " << first + i << " (position " << i << " of " << count << ") row " << r << ": "
                                  << b << " != alone " << a);
            }
          }
        }
      }
    }

    // Row splits, as the thread pool makes them (and finer): each piece computed by its own call.
    const std::vector<std::vector<int64_t>> splits = {
        {0, 37}, {0, 16, 32, 37}, {0, 5, 21, 37}, {0, 1, 2, 17, 36, 37}, {0, 9, 18, 27, 37}};
    for (int64_t num_tokens = 1; num_tokens <= 9; ++num_tokens) {
      for (const auto& split : splits) {
        std::vector<float> out(size_t(num_tokens * rows), std::nanf(""));
        for (size_t piece = 0; piece + 1 < split.size(); ++piece) {
          kernels::matmul(m.view(), act.data(), num_tokens, out.data(), rows, split[piece], split[piece + 1]);
        }
        for (int64_t t = 0; t < num_tokens; ++t) {
          for (int64_t r = 0; r < rows; ++r) {
            if (bits(alone[size_t(t * rows + r)]) != bits(out[size_t(t * rows + r)])) {
              FAIL_CHECK("split " << split.size() - 1 << " pieces, " << num_tokens << " tokens: token " << t
                                  << " row " << r);
            }
          }
        }
      }
    }
    // One row at a time.
    std::vector<float> out(size_t(9 * rows));
    for (int64_t r = 0; r < rows; ++r) kernels::matmul(m.view(), act.data(), 9, out.data(), rows, r, r + 1);
    CHECK(std::memcmp(out.data(), alone.data(), out.size() * sizeof(float)) == 0);
  }
}

TEST_CASE("matmul rejects weight types without a direct kernel") {
  CHECK_FALSE(kernels::has_direct_kernel(ggml_type::q4_k));
  CHECK_FALSE(kernels::has_direct_kernel(ggml_type::f32));
  const std::vector<uint8_t> data(32 * 4);
  const act_block act{};
  float out = 0;
  const kernels::weight_matrix f32_matrix{ggml_type::f32, data.data(), 1, 32, 32 * 4};
  CHECK_THROWS_AS(kernels::matmul(f32_matrix, &act, 1, &out, 1, 0, 1), std::invalid_argument);
}

TEST_CASE("quantize_row_q8_0 round-trips through dequantize_row") {
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  constexpr int64_t n = 512;
  std::vector<float> x(n);
  for (int64_t i = 0; i < n; ++i) x[size_t(i)] = normal(rng) * std::ldexp(1.0f, int((i / 32) % 12) - 6);
  std::fill_n(x.begin() + 64, 32, 0.0f);          // a zero block: scale 0, no NaN
  for (int i = 0; i < 32; ++i) x[size_t(96 + i)] = -float(i + 1);  // all negative, amax from a negative value
  std::vector<block_q8_0> blocks(n / 32);
  kernels::quantize_row_q8_0(x.data(), blocks.data(), n);
  std::vector<float> back(n);
  dequantize_row(ggml_type::q8_0, blocks.data(), back.data(), n);
  for (int64_t b = 0; b < n / 32; ++b) {
    CAPTURE(b);
    float amax = 0.0f;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[size_t(b * 32 + i)]));
    const float d16 = fp16_to_fp32(blocks[size_t(b)].d);
    CHECK(std::fabs(d16 - amax / 127.0f) <= amax / 127.0f / 2048.0f);
    for (int i = 0; i < 32; ++i) {
      const int64_t k = b * 32 + i;
      CAPTURE(i);
      // Rounding to the grid costs d/2; the fp16 rounding of d adds |q| * |d16 - d| on top.
      const double bound = double(amax) / 254.0 +
                           std::abs(int(blocks[size_t(b)].qs[i])) * std::fabs(double(d16) - double(amax) / 127.0) +
                           1e-7 * double(amax);
      CHECK(std::fabs(double(back[size_t(k)]) - double(x[size_t(k)])) <= bound);
      if (std::fabs(x[size_t(k)]) == amax && amax > 0) CHECK(std::abs(int(blocks[size_t(b)].qs[i])) == 127);
    }
  }
  CHECK(blocks[2].d == 0);
  for (int i = 0; i < 32; ++i) CHECK(int(blocks[2].qs[i]) == 0);
  CHECK(int(blocks[3].qs[4]) == -20);  // -5 * 127/32 = -19.84
  CHECK(int(blocks[3].qs[31]) == -127);
}
