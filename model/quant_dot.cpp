#include "quant_dot.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>

#include "inflight/half.hpp"
#include "quant_blocks.hpp"

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define INFLIGHT_AVX2 1
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
#define INFLIGHT_AVX512_PAIRS 1
#include <vector>
#endif
#endif

namespace inflight::kernels {

using namespace inflight::quant;

bool has_direct_kernel(ggml_type type) {
  return type == ggml_type::q4_0 || type == ggml_type::q4_1 || type == ggml_type::q8_0;
}

namespace {

float round_trip_fp16(float x) { return fp16_to_fp32(fp32_to_fp16(x)); }

float block_abs_max(const float* values) {
  float amax = 0.0f;
  for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(values[i]));
  return amax;
}

}  // namespace

void quantize_activations(const float* x, act_block* out, int64_t n) {
  for (int64_t block = 0; block < n / act_block_values; ++block) {
    const float* values = x + block * act_block_values;
    const float amax = block_abs_max(values);
    const float d = amax / 127.0f;
    const float inverse = amax != 0.0f ? 127.0f / amax : 0.0f;
    int32_t sum = 0;
    act_block& dst = out[block];
    for (int i = 0; i < act_block_values; ++i) {
      // nearbyint: round half to even, as ggml's AVX2 path (_mm256_round_ps, nearest) does.
      const int32_t q = int32_t(std::nearbyint(values[i] * inverse));
      dst.qs[i] = int8_t(q);
      sum += q;
    }
    dst.d = round_trip_fp16(d);
    dst.ds = round_trip_fp16(d * float(sum));
  }
}

void quantize_row_q8_0(const float* x, void* out_blocks, int64_t n) {
  auto* out = static_cast<block_q8_0*>(out_blocks);
  for (int64_t block = 0; block < n / qk8_0; ++block) {
    const float* values = x + block * qk8_0;
    const float d = block_abs_max(values) / 127.0f;
    const float inverse = d != 0.0f ? 1.0f / d : 0.0f;
    out[block].d = fp32_to_fp16(d);
    for (int i = 0; i < qk8_0; ++i) out[block].qs[i] = int8_t(std::lround(values[i] * inverse));
  }
}

namespace {

// fp16 scale -> float. F16C converts exactly, as the portable bit-twiddling version does, in one instruction.
inline float scale_to_float(uint16_t half) {
#ifdef __F16C__
  return _cvtsh_ss(half);
#else
  return fp16_to_fp32(half);
#endif
}

// ---- per-block weight unpacking ------------------------------------------------------------------
// Each weight type provides: the scale d, an optional "min" m (Q4_1), and its 32 quants in value order.
// Signed types (Q4_0, Q8_0) yield int8 in [-127, 127]; Q4_1 yields unsigned 0..15.

#ifdef INFLIGHT_AVX2

inline __m256i unpack_nibbles(const uint8_t* qs) {  // 16 bytes -> 32 values: low nibbles first, then high
  const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  const __m256i both = _mm256_set_m128i(_mm_srli_epi16(packed, 4), packed);
  return _mm256_and_si256(both, _mm256_set1_epi8(0x0f));
}

// The 32 quants of a signed block type as int8 in [-127, 127]: Q4_0's nibbles re-centred, Q8_0's as stored.
inline __m256i signed_quants(const block_q4_0& w) { return _mm256_sub_epi8(unpack_nibbles(w.qs), _mm256_set1_epi8(8)); }
inline __m256i signed_quants(const block_q8_0& w) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.qs)); }

// Sum over 32 lanes of u8 a * s8 b, as 8 int32 partial sums.
inline __m256i dot_u8_s8(__m256i a, __m256i b) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
  return _mm256_dpbusd_epi32(_mm256_setzero_si256(), a, b);
#elif defined(__AVXVNNI__)
  return _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), a, b);
#else
  const __m256i pairs = _mm256_maddubs_epi16(a, b);  // no saturation: |a*b| sums stay < 2^15 here
  return _mm256_madd_epi16(pairs, _mm256_set1_epi16(1));
#endif
}

inline float horizontal_sum(__m256 v) {
  const __m128 lo = _mm256_castps256_ps128(v);
  const __m128 hi = _mm256_extractf128_ps(v, 1);
  __m128 sum = _mm_add_ps(lo, hi);
  sum = _mm_add_ps(sum, _mm_movehl_ps(sum, sum));
  sum = _mm_add_ss(sum, _mm_movehdup_ps(sum));
  return _mm_cvtss_f32(sum);
}

// Dots one weight row with `tile` activation rows (tile <= 4). The per-token instruction sequence does
// not depend on `tile`.
template <class block_type, int tile>
void dot_row_tile(const block_type* row, const act_block* const* act, int64_t num_blocks, float* result) {
  __m256 acc[tile];
  float min_terms[tile];
  for (int t = 0; t < tile; ++t) { acc[t] = _mm256_setzero_ps(); min_terms[t] = 0.0f; }
  for (int64_t b = 0; b < num_blocks; ++b) {
    const block_type& w = row[b];
    const float dw = scale_to_float(w.d);
    if constexpr (std::is_same_v<block_type, block_q4_1>) {
      const __m256i quants = unpack_nibbles(w.qs);
      const float mw = scale_to_float(w.m);
      for (int t = 0; t < tile; ++t) {
        const act_block& a = act[t][b];
        const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.qs));
        const __m256 products = _mm256_cvtepi32_ps(dot_u8_s8(quants, q));
        acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dw * a.d), products, acc[t]);
        min_terms[t] = std::fma(mw, a.ds, min_terms[t]);  // explicit: the 512-bit path must match it
      }
    } else {
      const __m256i quants = signed_quants(w);
      // u8 x s8 products need an unsigned side: |w| * (sign(w) * q) == w * q.
      const __m256i magnitudes = _mm256_sign_epi8(quants, quants);
      for (int t = 0; t < tile; ++t) {
        const act_block& a = act[t][b];
        const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.qs));
        const __m256 products = _mm256_cvtepi32_ps(dot_u8_s8(magnitudes, _mm256_sign_epi8(q, quants)));
        acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dw * a.d), products, acc[t]);
      }
    }
  }
  for (int t = 0; t < tile; ++t) result[t] = horizontal_sum(acc[t]) + min_terms[t];
}

#else  // portable scalar path

inline int weight_value(const block_q4_0& w, int i) {
  return (i < 16 ? (w.qs[i] & 0x0f) : (w.qs[i - 16] >> 4)) - 8;
}
inline int weight_value(const block_q4_1& w, int i) {
  return i < 16 ? (w.qs[i] & 0x0f) : (w.qs[i - 16] >> 4);
}
inline int weight_value(const block_q8_0& w, int i) { return w.qs[i]; }

template <class block_type, int tile>
void dot_row_tile(const block_type* row, const act_block* const* act, int64_t num_blocks, float* result) {
  for (int t = 0; t < tile; ++t) {
    float sum = 0.0f, min_terms = 0.0f;
    for (int64_t b = 0; b < num_blocks; ++b) {
      const act_block& a = act[t][b];
      int32_t dot = 0;
      for (int i = 0; i < 32; ++i) dot += weight_value(row[b], i) * a.qs[i];
      sum += fp16_to_fp32(row[b].d) * a.d * float(dot);
      if constexpr (std::is_same_v<block_type, block_q4_1>) min_terms += fp16_to_fp32(row[b].m) * a.ds;
    }
    result[t] = sum + min_terms;
  }
}

#endif

// Rows are walked in chunks that stay in L1 while every token tile passes over them: the weights are
// read from memory once per step however many tokens the step carries.
constexpr int64_t rows_per_chunk = 16;
constexpr int token_tile = 4;

#ifdef INFLIGHT_AVX512_PAIRS

// AVX-512 path: two tokens share one 512-bit register (token 2p in lanes 0-7, token 2p+1 in lanes 8-15)
// against the same weight block broadcast to both halves. Every lane performs exactly the operations of
// the 256-bit path above, so results are bit-identical to it (and a token's result still does not depend
// on its neighbours); only the instruction count per token halves. Each token pair's activations and
// scales are interleaved once per call into `pair_quants`/`pair_scales`.
// GCC 12 reports its own _mm512_cast* intrinsics as reading an uninitialized upper half (a known false
// positive: the cast leaves those lanes undefined by design and we overwrite them).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

struct alignas(64) pair_quants_block { int8_t values[64]; };  // 32 int8 of token 2p | 32 of token 2p+1
struct alignas(64) pair_scales_block { float values[16]; };   // a value of token 2p x8 | of token 2p+1 x8

struct pair_buffers {
  std::vector<pair_quants_block> quants;  // [pair][block]
  std::vector<pair_scales_block> scales;  // [pair][block]: the activation scales d
  std::vector<pair_scales_block> sums;    // [pair][block]: ds, for Q4_1's min term
};

pair_buffers& thread_pair_buffers() {
  thread_local pair_buffers buffers;  // sized by reserve_thread_scratch before the first step
  return buffers;
}

void reserve_pairs(int64_t num_pairs, int64_t num_blocks) {
  pair_buffers& buffers = thread_pair_buffers();
  if (buffers.quants.size() < size_t(num_pairs * num_blocks)) {
    buffers.quants.resize(size_t(num_pairs * num_blocks));
    buffers.scales.resize(size_t(num_pairs * num_blocks));
    buffers.sums.resize(size_t(num_pairs * num_blocks));
  }
}

template <class block_type, int pairs>
void dot_row_pairs(const block_type* row, const pair_quants_block* pair_quants, const pair_scales_block* pair_scales,
                   const pair_scales_block* pair_sums, int64_t num_blocks, float* result) {
  __m512 acc[pairs], min_terms[pairs];  // min_terms: lane 0 for token 2p, lane 8 for token 2p+1
  for (int p = 0; p < pairs; ++p) acc[p] = min_terms[p] = _mm512_setzero_ps();
  for (int64_t b = 0; b < num_blocks; ++b) {
    const block_type& w = row[b];
    const __m512 dw = _mm512_set1_ps(scale_to_float(w.d));
    __m512i weights;
    __mmask64 negative = 0;
    if constexpr (std::is_same_v<block_type, block_q4_1>) {
      weights = _mm512_broadcast_i64x4(unpack_nibbles(w.qs));
    } else {
      const __m512i both = _mm512_broadcast_i64x4(signed_quants(w));
      negative = _mm512_movepi8_mask(both);
      weights = _mm512_abs_epi8(both);
    }
    for (int p = 0; p < pairs; ++p) {
      __m512i q = _mm512_load_si512(pair_quants[p * num_blocks + b].values);
      if constexpr (!std::is_same_v<block_type, block_q4_1>) {
        q = _mm512_mask_sub_epi8(q, negative, _mm512_setzero_si512(), q);  // sign(w) * q
      }
      const __m512 products = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_setzero_si512(), weights, q));
      const __m512 scale = _mm512_mul_ps(dw, _mm512_load_ps(pair_scales[p * num_blocks + b].values));
      acc[p] = _mm512_fmadd_ps(scale, products, acc[p]);
    }
    if constexpr (std::is_same_v<block_type, block_q4_1>) {
      const __m512 mw = _mm512_set1_ps(scale_to_float(w.m));
      for (int p = 0; p < pairs; ++p) {
        min_terms[p] = _mm512_fmadd_ps(mw, _mm512_load_ps(pair_sums[p * num_blocks + b].values), min_terms[p]);
      }
    }
  }
  for (int p = 0; p < pairs; ++p) {
    const __m256 low = _mm512_castps512_ps256(acc[p]);
    const __m256 high = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc[p]), 1));
    alignas(64) float mins[16];
    _mm512_store_ps(mins, min_terms[p]);
    result[2 * p] = horizontal_sum(low) + mins[0];
    result[2 * p + 1] = horizontal_sum(high) + mins[8];
  }
}

constexpr int pairs_per_tile = 4;  // 8 was slower: the accumulators spill

template <class block_type>
void matmul_typed(const weight_matrix& weights, const act_block* act, int64_t num_tokens, float* out,
                  int64_t out_stride, int64_t row_begin, int64_t row_end) {
  const int64_t num_blocks = weights.cols / 32;
  const int64_t num_pairs = num_tokens / 2;
  reserve_pairs(num_pairs, num_blocks);  // a no-op after reserve_thread_scratch
  pair_buffers& buffers = thread_pair_buffers();
  for (int64_t p = 0; p < num_pairs; ++p) {
    const act_block* first = act + (2 * p) * num_blocks;
    const act_block* second = first + num_blocks;
    for (int64_t b = 0; b < num_blocks; ++b) {
      const __m256i q0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(first[b].qs));
      const __m256i q1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(second[b].qs));
      _mm512_store_si512(buffers.quants[size_t(p * num_blocks + b)].values,
                         _mm512_inserti64x4(_mm512_castsi256_si512(q0), q1, 1));
      _mm512_store_ps(buffers.scales[size_t(p * num_blocks + b)].values,
                      _mm512_mask_blend_ps(0xff00, _mm512_set1_ps(first[b].d), _mm512_set1_ps(second[b].d)));
      _mm512_store_ps(buffers.sums[size_t(p * num_blocks + b)].values,
                      _mm512_mask_blend_ps(0xff00, _mm512_set1_ps(first[b].ds), _mm512_set1_ps(second[b].ds)));
    }
  }
  for (int64_t chunk = row_begin; chunk < row_end; chunk += rows_per_chunk) {
    const int64_t chunk_end = std::min(chunk + rows_per_chunk, row_end);
    for (int64_t p0 = 0; p0 < num_pairs; p0 += pairs_per_tile) {
      const int pairs = int(std::min<int64_t>(pairs_per_tile, num_pairs - p0));
      const pair_quants_block* quants = buffers.quants.data() + p0 * num_blocks;
      const pair_scales_block* scales = buffers.scales.data() + p0 * num_blocks;
      const pair_scales_block* sums = buffers.sums.data() + p0 * num_blocks;
      for (int64_t r = chunk; r < chunk_end; ++r) {
        const auto* row = reinterpret_cast<const block_type*>(weights.data + size_t(r) * weights.row_bytes);
        float result[2 * pairs_per_tile] = {};
        switch (pairs) {
          case 4: dot_row_pairs<block_type, 4>(row, quants, scales, sums, num_blocks, result); break;
          case 3: dot_row_pairs<block_type, 3>(row, quants, scales, sums, num_blocks, result); break;
          case 2: dot_row_pairs<block_type, 2>(row, quants, scales, sums, num_blocks, result); break;
          default: dot_row_pairs<block_type, 1>(row, quants, scales, sums, num_blocks, result); break;
        }
        for (int t = 0; t < 2 * pairs; ++t) out[(2 * p0 + t) * out_stride + r] = result[t];
      }
    }
    if (num_tokens % 2) {  // the odd token out takes the 256-bit path, whose lanes compute the same values
      const act_block* last[1] = {act + (num_tokens - 1) * num_blocks};
      for (int64_t r = chunk; r < chunk_end; ++r) {
        const auto* row = reinterpret_cast<const block_type*>(weights.data + size_t(r) * weights.row_bytes);
        float result[1];
        dot_row_tile<block_type, 1>(row, last, num_blocks, result);
        out[(num_tokens - 1) * out_stride + r] = result[0];
      }
    }
  }
}

#pragma GCC diagnostic pop

#else  // 256-bit or scalar path

template <class block_type>
void matmul_typed(const weight_matrix& weights, const act_block* act, int64_t num_tokens, float* out,
                  int64_t out_stride, int64_t row_begin, int64_t row_end) {
  const int64_t num_blocks = weights.cols / 32;
  for (int64_t chunk = row_begin; chunk < row_end; chunk += rows_per_chunk) {
    const int64_t chunk_end = std::min(chunk + rows_per_chunk, row_end);
    for (int64_t t0 = 0; t0 < num_tokens; t0 += token_tile) {
      const int tile = int(std::min<int64_t>(token_tile, num_tokens - t0));
      const act_block* rows_of_act[token_tile];
      for (int t = 0; t < tile; ++t) rows_of_act[t] = act + (t0 + t) * num_blocks;
      for (int64_t r = chunk; r < chunk_end; ++r) {
        const auto* row = reinterpret_cast<const block_type*>(weights.data + size_t(r) * weights.row_bytes);
        float result[token_tile];
        switch (tile) {
          case 4: dot_row_tile<block_type, 4>(row, rows_of_act, num_blocks, result); break;
          case 3: dot_row_tile<block_type, 3>(row, rows_of_act, num_blocks, result); break;
          case 2: dot_row_tile<block_type, 2>(row, rows_of_act, num_blocks, result); break;
          default: dot_row_tile<block_type, 1>(row, rows_of_act, num_blocks, result); break;
        }
        for (int t = 0; t < tile; ++t) out[(t0 + t) * out_stride + r] = result[t];
      }
    }
  }
}

#endif

}  // namespace

void reserve_thread_scratch(int64_t max_tokens, int64_t max_cols) {
#ifdef INFLIGHT_AVX512_PAIRS
  reserve_pairs(max_tokens / 2, max_cols / 32);
#endif
}

void matmul(const weight_matrix& weights, const act_block* act, int64_t num_tokens, float* out, int64_t out_stride,
            int64_t row_begin, int64_t row_end) {
  switch (weights.type) {
    case ggml_type::q4_0: return matmul_typed<block_q4_0>(weights, act, num_tokens, out, out_stride, row_begin, row_end);
    case ggml_type::q4_1: return matmul_typed<block_q4_1>(weights, act, num_tokens, out, out_stride, row_begin, row_end);
    case ggml_type::q8_0: return matmul_typed<block_q8_0>(weights, act, num_tokens, out, out_stride, row_begin, row_end);
    default: throw std::invalid_argument("matmul: no direct kernel for this weight type");
  }
}

}  // namespace inflight::kernels
