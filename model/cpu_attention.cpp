#include "cpu_attention.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

#include "inflight/half.hpp"

#if defined(__AVX2__) && defined(__F16C__) && defined(__FMA__)
#include <immintrin.h>
#define INFLIGHT_F16C 1
#endif

namespace inflight::kernels {

void rope_angles(int32_t position, int32_t rope_dims, float freq_base, float freq_scale, const float* freq_factors,
                 float* cos_out, float* sin_out) {
  const float theta_scale = std::pow(freq_base, -2.0f / float(rope_dims));
  float theta = float(position);
  for (int32_t pair = 0; pair < rope_dims / 2; ++pair) {
    const float factor = freq_factors ? freq_factors[pair] : 1.0f;
    const float angle = freq_scale * theta / factor;
    cos_out[pair] = std::cos(angle);
    sin_out[pair] = std::sin(angle);
    theta *= theta_scale;
  }
}

void apply_rope(float* x, int32_t num_heads, int32_t head_dim, int32_t rope_dims, const float* cos_values,
                const float* sin_values) {
  for (int32_t head = 0; head < num_heads; ++head) {
    float* h = x + int64_t(head) * head_dim;
    for (int32_t pair = 0; pair < rope_dims / 2; ++pair) {
      const float x0 = h[2 * pair], x1 = h[2 * pair + 1];
      h[2 * pair] = x0 * cos_values[pair] - x1 * sin_values[pair];
      h[2 * pair + 1] = x0 * sin_values[pair] + x1 * cos_values[pair];
    }
  }
}

namespace {

// float -> fp16, round half to even (F16C does exactly what the scalar fp32_to_fp16 does, 8 at a time).
inline void to_fp16(const float* src, uint16_t* dst, int32_t n) {
  int32_t i = 0;
#ifdef INFLIGHT_F16C
  for (; i + 8 <= n; i += 8) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
  }
#endif
  for (; i < n; ++i) dst[i] = fp32_to_fp16(src[i]);
}

// Rounds values through fp16 in place (what ggml's f16 operands see).
inline void round_through_fp16(float* values, int32_t n) {
  int32_t i = 0;
#ifdef INFLIGHT_F16C
  for (; i + 8 <= n; i += 8) {
    const __m128i half = _mm256_cvtps_ph(_mm256_loadu_ps(values + i), _MM_FROUND_TO_NEAREST_INT);
    _mm256_storeu_ps(values + i, _mm256_cvtph_ps(half));
  }
#endif
  for (; i < n; ++i) values[i] = fp16_to_fp32(fp32_to_fp16(values[i]));
}

// An fp16 row of the cache as floats (exact).
inline void load_fp16_row(const uint16_t* src, float* dst, int32_t n) {
  int32_t i = 0;
#ifdef INFLIGHT_F16C
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
  }
#endif
  for (; i < n; ++i) dst[i] = fp16_to_fp32(src[i]);
}

// dot(a, b) over n values: 8 lanes of FMA, then a horizontal sum (n a multiple of 8 on the SIMD path).
inline float dot(const float* a, const float* b, int32_t n) {
#ifdef INFLIGHT_F16C
  if (n % 8 == 0) {
    __m256 acc = _mm256_setzero_ps();
    for (int32_t i = 0; i < n; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
    __m128 sum = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    sum = _mm_add_ps(sum, _mm_movehl_ps(sum, sum));
    sum = _mm_add_ss(sum, _mm_movehdup_ps(sum));
    return _mm_cvtss_f32(sum);
  }
#endif
  float sum = 0.0f;
  for (int32_t i = 0; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

// out += weight * a over n values.
inline void axpy(float weight, const float* a, float* out, int32_t n) {
#ifdef INFLIGHT_F16C
  if (n % 8 == 0) {
    const __m256 w = _mm256_set1_ps(weight);
    for (int32_t i = 0; i < n; i += 8) {
      _mm256_storeu_ps(out + i, _mm256_fmadd_ps(w, _mm256_loadu_ps(a + i), _mm256_loadu_ps(out + i)));
    }
    return;
  }
#endif
  for (int32_t i = 0; i < n; ++i) out[i] += weight * a[i];
}

// Calls visit(position, slot) for positions [0, num_positions) in order, walking the block table block by
// block (no division per position).
template <class Visit>
inline void for_each_slot(std::span<const int32_t> block_table, int32_t block_size, int32_t num_positions,
                          Visit visit) {
  int32_t position = 0;
  for (size_t block = 0; position < num_positions; ++block) {
    const int64_t first_slot = int64_t(block_table[block]) * block_size;
    const int32_t count = std::min(block_size, num_positions - position);
    for (int32_t offset = 0; offset < count; ++offset, ++position) visit(position, first_slot + offset);
  }
}

#ifdef INFLIGHT_F16C
// out[g] = sum over positions of p[g][position] * V[position], for `group` query heads of one kv head
// with `vectors` x 8 dimensions, holding the group's accumulators in registers instead of reloading and
// storing `out` at every position. Each lane performs the same FMAs in the same order as axpy(), so the
// result is bit-identical to the generic loop.
template <int group, int vectors>
void accumulate_values(const uint16_t* v_cache, std::span<const int32_t> block_table, const attention_shape& shape,
                       int32_t num_positions, int32_t kv_head, const float* probabilities, float* out) {
  const int64_t token_stride = int64_t(shape.num_kv_heads) * shape.head_dim;
  __m256 acc[group][vectors];
  for (int g = 0; g < group; ++g) {
    for (int i = 0; i < vectors; ++i) acc[g][i] = _mm256_loadu_ps(out + int64_t(kv_head * group + g) * shape.head_dim + 8 * i);
  }
  for_each_slot(block_table, shape.block_size, num_positions, [&](int32_t position, int64_t slot) {
    const uint16_t* v = v_cache + slot * token_stride + int64_t(kv_head) * shape.head_dim;
    __m256 values[vectors];
    for (int i = 0; i < vectors; ++i) values[i] = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(v + 8 * i)));
    for (int g = 0; g < group; ++g) {
      const __m256 weight = _mm256_set1_ps(probabilities[int64_t(g) * num_positions + position]);
      for (int i = 0; i < vectors; ++i) acc[g][i] = _mm256_fmadd_ps(weight, values[i], acc[g][i]);
    }
  });
  for (int g = 0; g < group; ++g) {
    for (int i = 0; i < vectors; ++i) _mm256_storeu_ps(out + int64_t(kv_head * group + g) * shape.head_dim + 8 * i, acc[g][i]);
  }
}
#endif

constexpr int32_t max_queries_per_kv = 16;
constexpr int32_t max_head_dim = 256;

}  // namespace

void store_kv(const float* k, const float* v, uint16_t* k_cache, uint16_t* v_cache, int64_t slot,
              int32_t kv_values_per_token) {
  to_fp16(k, k_cache + slot * kv_values_per_token, kv_values_per_token);
  to_fp16(v, v_cache + slot * kv_values_per_token, kv_values_per_token);
}

void attend(const float* q, const uint16_t* k_cache, const uint16_t* v_cache, std::span<const int32_t> block_table,
            int32_t num_positions, int32_t kv_head, const attention_shape& shape, float* out, float* scratch) {
  const int32_t group = shape.queries_per_kv();
  const int32_t dim = shape.head_dim;
  const int64_t token_stride = int64_t(shape.num_kv_heads) * dim;
  const float scale = 1.0f / std::sqrt(float(dim));

  // ggml's non-flash path multiplies K (fp16) by Q converted to fp16; mirror that rounding.
  float queries[max_queries_per_kv * max_head_dim];
  std::copy_n(q + int64_t(kv_head) * group * dim, group * dim, queries);
  round_through_fp16(queries, group * dim);

  // Scores: every K vector is read (and widened to float) once for all query heads of the group.
  float row[max_head_dim];
  for_each_slot(block_table, shape.block_size, num_positions, [&](int32_t position, int64_t slot) {
    load_fp16_row(k_cache + slot * token_stride + int64_t(kv_head) * dim, row, dim);
    for (int32_t g = 0; g < group; ++g) {
      scratch[int64_t(g) * num_positions + position] = dot(row, queries + g * dim, dim) * scale;
    }
  });

  // Softmax per head (sum in double, as ggml does); probabilities rounded to fp16 as ggml's V product sees them.
  for (int32_t g = 0; g < group; ++g) {
    float* scores = scratch + int64_t(g) * num_positions;
    const float max_score = *std::max_element(scores, scores + num_positions);
    // Two loops, same order of additions: keeping the running sum out of the loop that calls expf
    // saves a spill and reload around every call.
    for (int32_t p = 0; p < num_positions; ++p) scores[p] = std::exp(scores[p] - max_score);
    double sum = 0.0;
    for (int32_t p = 0; p < num_positions; ++p) sum += scores[p];
    const float inverse = float(1.0 / sum);
    for (int32_t p = 0; p < num_positions; ++p) scores[p] *= inverse;
    round_through_fp16(scores, num_positions);
    std::fill_n(out + int64_t(kv_head * group + g) * dim, dim, 0.0f);
  }

  // Weighted sum of V, again one read of each V vector for the whole group.
#ifdef INFLIGHT_F16C
  if (dim == 64 && group <= 3) {  // SmolLM2 and most small GQA models: accumulate in registers
    switch (group) {
      case 1: return accumulate_values<1, 8>(v_cache, block_table, shape, num_positions, kv_head, scratch, out);
      case 2: return accumulate_values<2, 8>(v_cache, block_table, shape, num_positions, kv_head, scratch, out);
      case 3: return accumulate_values<3, 8>(v_cache, block_table, shape, num_positions, kv_head, scratch, out);
    }
  }
#endif
  for_each_slot(block_table, shape.block_size, num_positions, [&](int32_t position, int64_t slot) {
    load_fp16_row(v_cache + slot * token_stride + int64_t(kv_head) * dim, row, dim);
    for (int32_t g = 0; g < group; ++g) {
      axpy(scratch[int64_t(g) * num_positions + position], row, out + int64_t(kv_head * group + g) * dim, dim);
    }
  });
}

}  // namespace inflight::kernels
