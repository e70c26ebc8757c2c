// Host-side token sampling. See include/inflight/sampling.hpp for the contract and the order of
// operations; the comments here are about cost and numerics.
//
// Cost per token for a vocabulary of V (each "pass" is O(V), nothing is O(V log V) but the rare
// degenerate top-p case of thousands of exactly tied logits):
//   always   the raw log-sum-exp (a max pass and an exp pass), plus a pass that skips whole blocks
//            of four for top_logprobs;
//   greedy   one argmax pass; no sort, no RNG;
//   random   an exp pass for the weights (skipped at temperature 1 with no penalty: the raw pass
//            stored them), top-k by a heap in one pass, top-p by a histogram of the weights and a
//            sort of its boundary bucket only, a pass for the draw.
// Nothing allocates after construction (set_prompt aside).
#include "inflight/sampling.hpp"

#include <algorithm>
#include <bit>
#include <cassert>
#include <cmath>
#include <cstring>
#include <limits>

namespace inflight {

namespace {

constexpr float neg_inf = -std::numeric_limits<float>::infinity();

using candidate = std::pair<float, int32_t>;

// Strict total order on (value, id): larger value first, lower id first on ties. Breaking ties by id
// makes selections, and therefore seeded draws, independent of the STL's algorithms.
bool more_likely(const candidate& a, const candidate& b) {
  return a.first > b.first || (a.first == b.first && a.second < b.second);
}

// A uniform double in [0, 1) from the top 53 bits: unlike std::uniform_real_distribution, whose
// algorithm is left to the library, this gives the same draws for a seed on every platform.
double uniform01(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

uint64_t random_seed() {
  std::random_device device;
  return (static_cast<uint64_t>(device()) << 32) ^ device();
}

// --- Four-lane vectors (GCC/Clang vector extensions) -------------------------------------------
// Built for this CPU's ISA with INFLIGHT_NATIVE (model/CMakeLists.txt), else for the x86-64 baseline;
// either way without FMA contraction, so results do not depend on the build.
using float4 = float __attribute__((vector_size(16)));
using uint4 = uint32_t __attribute__((vector_size(16)));

float4 splat(float x) { return float4{x, x, x, x}; }

float4 load4(const float* p) {
  float4 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// The last `count` (< 4) values, padded with `pad`.
float4 load_tail(const float* p, int32_t count, float pad) {
  float4 v = splat(pad);
  for (int32_t lane = 0; lane < count; ++lane) v[lane] = p[lane];
  return v;
}

// exp(x) for x <= 0 to within 1e-7 relative; 0 for x < -87 (a weight under 1e-38 of the top
// token's), -inf and NaN. Cephes' expf: x = n ln2 + r with |r| <= ln2 / 2, a polynomial for e^r,
// 2^n built in the exponent bits. Plain IEEE operations (built with -ffp-contract=off: no FMAs), so
// seeded draws reproduce across machines.
//
// Written for any lane count: the exp pass runs it on 16 lanes (four independent chains keep the FPU
// busy where one 4-lane chain waits on its own results), elementwise identical to the 4-lane form.
template <class Float, class Uint>
Float exp_nonpositive_lanes(Float x) {
  const Float magic = Float{} + 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const Float t = x * 1.44269504088896341f + magic;
  const Float n = t - magic;
  const Float r = x - n * 0.693359375f - n * -2.12194440e-4f;  // ln2 split in two for exactness
  Float p = r * 1.9875691500e-4f + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const Float y = p * r * r + r + 1.0f;
  // n sits in t's low mantissa bits; n + 127 shifted into the exponent field is 2^n.
  const Uint exponent = (std::bit_cast<Uint>(t) - 0x4B400000u + 127u) << 23;
  const Float result = y * std::bit_cast<Float>(exponent);
  return x >= Float{} - 87.0f ? result : Float{};
}

float4 exp_nonpositive(float4 x) { return exp_nonpositive_lanes<float4, uint4>(x); }

// 64-byte vectors only ever travel between these always-inlined internal helpers; GCC's note that their
// calling convention differs without AVX-512 does not concern us.
#pragma GCC diagnostic ignored "-Wpsabi"
using float16 = float __attribute__((vector_size(64)));
using uint16 = uint32_t __attribute__((vector_size(64)));

float16 load16(const float* p) {
  float16 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// The largest non-NaN value, -inf if there is none.
float max_value(const float* x, int32_t n) {
  float4 best = splat(neg_inf);
  int32_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const float4 v = load4(x + i);
    best = v > best ? v : best;  // a NaN lane compares false and is passed over
  }
  if (i < n) {
    const float4 v = load_tail(x + i, n - i, neg_inf);
    best = v > best ? v : best;
  }
  return std::max(std::max(best[0], best[1]), std::max(best[2], best[3]));
}

// Sum over i of exp((x[i] - shift) * scale), NaN terms as 0; each term is stored to out[i] when out
// is given. Lanes accumulate 16 terms in float, then flush to a double, which bounds the rounding
// error near 1e-6 relative where one float sum over 128k terms could lose several digits.
double sum_exp(const float* x, int32_t n, float shift, float scale, float* out) {
  double total = 0.0;
  float4 partial{};
  int32_t i = 0;
  // 16 terms at a time, added into the 4 lanes in the same order as the 4-wide loop below: the same sum
  // to the bit, whichever loop an element goes through.
  for (; i + 16 <= n; i += 16) {
    const float16 terms = exp_nonpositive_lanes<float16, uint16>((load16(x + i) - shift) * scale);
    if (out != nullptr) std::memcpy(out + i, &terms, sizeof terms);
    for (int32_t quarter = 0; quarter < 4; ++quarter) {
      float4 four;
      std::memcpy(&four, reinterpret_cast<const float*>(&terms) + 4 * quarter, sizeof four);
      partial += four;
      if (((i + 4 * quarter) & 63) == 60) {
        total += (static_cast<double>(partial[0]) + partial[1]) + (static_cast<double>(partial[2]) + partial[3]);
        partial = float4{};
      }
    }
  }
  for (; i + 4 <= n; i += 4) {
    const float4 terms = exp_nonpositive((load4(x + i) - shift) * scale);
    if (out != nullptr) std::memcpy(out + i, &terms, sizeof terms);
    partial += terms;
    if ((i & 63) == 60) {
      total += (static_cast<double>(partial[0]) + partial[1]) + (static_cast<double>(partial[2]) + partial[3]);
      partial = float4{};
    }
  }
  if (i < n) {
    const float4 terms = exp_nonpositive((load_tail(x + i, n - i, neg_inf) - shift) * scale);
    if (out != nullptr) std::memcpy(out + i, &terms, sizeof(float) * static_cast<size_t>(n - i));
    partial += terms;
  }
  return total + (static_cast<double>(partial[0]) + partial[1]) + (static_cast<double>(partial[2]) + partial[3]);
}

// The first i with x[i] == value (n when there is none), 16 at a time.
int32_t first_equal(const float* x, int32_t n, float value) {
  int32_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const auto hit = load16(x + i) == value;
    uint32_t any = 0;
    for (int32_t lane = 0; lane < 16; ++lane) any |= uint32_t(hit[lane]);
    if (any) break;
  }
  for (; i < n; ++i)
    if (x[i] == value) return i;
  return n;
}

// The `count` most likely (value, id) of x[0, n), unordered in out[0, returned); fewer only when x
// holds fewer non-NaN values. A heap whose front is the weakest kept: once it is full, a block of
// four that cannot beat the front is passed over with one vector compare, which for count << n is
// nearly every block, so this costs about one streaming pass.
int32_t select_top(const float* x, int32_t n, int32_t count, candidate* out) {
  int32_t size = 0;
  int32_t i = 0;
  for (; i < n && size < count; ++i) {
    if (x[i] == x[i]) out[size++] = {x[i], i};
  }
  std::make_heap(out, out + size, more_likely);
  if (size < count) return size;
  // Strict >: a value equal to the front's loses, its id being higher. NaN compares false.
  auto offer = [&](float value, int32_t id) {
    if (!(value > out[0].first)) return;
    std::pop_heap(out, out + size, more_likely);
    out[size - 1] = {value, id};
    std::push_heap(out, out + size, more_likely);
  };
  for (; i + 4 <= n; i += 4) {
    const auto beats = load4(x + i) > splat(out[0].first);
    if ((beats[0] | beats[1] | beats[2] | beats[3]) == 0) continue;
    for (int32_t lane = 0; lane < 4; ++lane) offer(x[i + lane], i + lane);
  }
  for (; i < n; ++i) offer(x[i], i);
  return size;
}

// Sorts the most likely prefix of c[0, n) until it holds `target_mass` of weight and returns its
// length (n if it never does; at least 1 if n > 0). The window doubles from 64, so a peaked
// distribution stops after one small nth_element and sort.
int32_t most_likely_prefix(candidate* c, int32_t n, double target_mass) {
  double kept = 0.0;
  int32_t sorted_end = 0;
  while (sorted_end < n) {
    const int32_t window_end = std::min<int32_t>(n, std::max<int32_t>(64, 2 * sorted_end));
    if (window_end < n) std::nth_element(c + sorted_end, c + window_end, c + n, more_likely);
    std::sort(c + sorted_end, c + window_end, more_likely);
    for (int32_t i = sorted_end; i < window_end; ++i) {
      kept += c[i].first;
      if (kept >= target_mass) return i + 1;
    }
    sorted_end = window_end;
  }
  return n;
}

// Top-p histogram buckets: a weight in (0, 1] keyed by its exponent and top 4 mantissa bits, i.e.
// 16 buckets per octave, largest weights first. The key is monotone in the weight (IEEE order of
// non-negative floats), so whole buckets are either in the nucleus or out, but the boundary one.
constexpr int32_t weight_one_key = static_cast<int32_t>(0x3F800000u >> 19);
constexpr int32_t num_weight_buckets = weight_one_key + 1;  // the last one holds weight 0

int32_t weight_bucket(float weight) {
  return std::max<int32_t>(0, weight_one_key - static_cast<int32_t>(std::bit_cast<uint32_t>(weight) >> 19));
}

}  // namespace

const char* validate(const sampling_params& params) {
  // Written as !(in range) so that NaN, which fails every comparison, is rejected too.
  if (!(params.temperature >= 0.0f)) return "temperature must be >= 0";
  if (std::isinf(params.temperature)) return "temperature must be finite";
  if (params.top_k < -1) return "top_k must be >= 0 (or -1 to disable)";
  if (!(params.top_p > 0.0f && params.top_p <= 1.0f)) return "top_p must be in (0, 1]";
  if (!(params.min_p >= 0.0f && params.min_p <= 1.0f)) return "min_p must be in [0, 1]";
  if (!(params.repetition_penalty > 0.0f)) return "repetition_penalty must be > 0";
  if (std::isinf(params.repetition_penalty)) return "repetition_penalty must be finite";
  if (!(params.presence_penalty >= -2.0f && params.presence_penalty <= 2.0f)) {
    return "presence_penalty must be in [-2, 2]";
  }
  if (!(params.frequency_penalty >= -2.0f && params.frequency_penalty <= 2.0f)) {
    return "frequency_penalty must be in [-2, 2]";
  }
  if (params.top_logprobs < 0 || params.top_logprobs > max_top_logprobs) {
    return "top_logprobs must be in [0, 20]";
  }
  if (params.logit_bias.size() > sampling_params::max_logit_bias) return "logit_bias may hold at most 1024 tokens";
  for (const auto& [token, bias] : params.logit_bias) {
    if (token < 0) return "logit_bias token ids must be >= 0";
    if (!(bias >= -100.0f && bias <= 100.0f)) return "logit_bias values must be in [-100, 100]";
  }
  return "";
}

sampler::sampler(const sampling_params& params, int32_t vocab_size)
    : params_(params),
      vocab_size_(vocab_size),
      rng_(params.seed ? *params.seed : random_seed()),
      output_counts_(static_cast<size_t>(vocab_size), 0),
      candidates_(static_cast<size_t>(vocab_size)),
      weights_(static_cast<size_t>(vocab_size)),
      bucket_mass_(num_weight_buckets) {
  assert(vocab_size > 0);
  // Both hold distinct vocab ids, so vocab_size bounds them and push_back never reallocates.
  output_seen_.reserve(static_cast<size_t>(vocab_size));
  // Biased ids are saved first and may be saved again by the penalties (raw_logit takes the first).
  penalized_raw_.reserve(static_cast<size_t>(vocab_size) + params_.logit_bias.size());
  // Ids the vocabulary does not have are dropped here (the request layer refuses them with a message).
  std::erase_if(params_.logit_bias, [vocab_size](const auto& entry) { return entry.first >= vocab_size || entry.first < 0; });
}

void sampler::set_prompt(std::span<const int32_t> prompt_tokens) {
  prompt_tokens_.clear();
  for (int32_t token : prompt_tokens) {
    if (token >= 0 && token < vocab_size_) prompt_tokens_.push_back(token);
  }
  std::sort(prompt_tokens_.begin(), prompt_tokens_.end());
  prompt_tokens_.erase(std::unique(prompt_tokens_.begin(), prompt_tokens_.end()), prompt_tokens_.end());
}

void sampler::apply_penalties(float* logits) {
  penalized_raw_.clear();
  for (const auto& [id, bias] : params_.logit_bias) {
    penalized_raw_.emplace_back(id, logits[id]);
    logits[id] += bias;
  }
  const float repetition = params_.repetition_penalty;
  const float presence = params_.presence_penalty;
  const float frequency = params_.frequency_penalty;
  const bool use_repetition = repetition != 1.0f;
  const bool use_output = presence != 0.0f || frequency != 0.0f;

  // HF / vLLM rule: shrink positive logits, push negative ones further down, so a penalty > 1 always
  // makes the token less likely whatever the logit's sign. Once per token of prompt ∪ output.
  auto repeat = [&](int32_t id) {
    float& logit = logits[id];
    logit = logit > 0.0f ? logit / repetition : logit * repetition;
  };
  if (use_repetition) {
    for (int32_t id : prompt_tokens_) {
      penalized_raw_.emplace_back(id, logits[id]);
      repeat(id);
    }
  }
  if (!use_repetition && !use_output) return;
  for (int32_t id : output_seen_) {
    const bool in_prompt = use_repetition && std::binary_search(prompt_tokens_.begin(), prompt_tokens_.end(), id);
    if (!in_prompt) penalized_raw_.emplace_back(id, logits[id]);  // else saved above
    if (use_repetition && !in_prompt) repeat(id);
    // OpenAI's definition, which vLLM follows (and in its order): frequency * count, then presence once.
    if (use_output) {
      logits[id] -= frequency * static_cast<float>(output_counts_[id]);
      logits[id] -= presence;
    }
  }
}

float sampler::raw_logit(const float* logits, int32_t token) const {
  for (const auto& [id, raw] : penalized_raw_) {
    if (id == token) return raw;
  }
  return logits[token];
}

int32_t sampler::nucleus(double target_mass) {
  const float* const weights = weights_.data();
  std::fill(bucket_mass_.begin(), bucket_mass_.end(), 0.0);
  for (int32_t i = 0; i < vocab_size_; ++i) bucket_mass_[weight_bucket(weights[i])] += weights[i];

  // The boundary bucket: the first whose mass, added to all before it, reaches the target.
  double mass_before = 0.0;
  int32_t boundary = 0;
  while (boundary < num_weight_buckets - 1 && mass_before + bucket_mass_[boundary] < target_mass) {
    mass_before += bucket_mass_[boundary++];
  }

  // Buckets before the boundary go to the front of candidates_, the boundary one to the back, where
  // only it is sorted. Zero weights never add mass and are never needed.
  candidate* const c = candidates_.data();
  int32_t front = 0;
  int32_t back = vocab_size_;
  for (int32_t i = 0; i < vocab_size_; ++i) {
    const float weight = weights[i];
    if (!(weight > 0.0f)) continue;
    const int32_t bucket = weight_bucket(weight);
    if (bucket < boundary) {
      c[front++] = {weight, i};
    } else if (bucket == boundary) {
      c[--back] = {weight, i};
    }
  }
  const int32_t from_boundary = most_likely_prefix(c + back, vocab_size_ - back, target_mass - mass_before);
  if (front != back) std::copy(c + back, c + back + from_boundary, c + front);  // front < back: safe forwards
  return front + from_boundary;
}

int32_t sampler::draw(const float* logits, bool weights_hold_raw, double raw_mass) {
  candidate* const c = candidates_.data();
  const float inv_temperature = 1.0f / params_.temperature;
  const bool use_top_k = params_.top_k > 0 && params_.top_k < vocab_size_;
  const bool use_top_p = params_.top_p < 1.0f;

  // Unnormalised probabilities exp((logit - max) / T): the top token weighs exactly 1, nothing
  // overflows, and the softmax is vLLM's softmax(logits / T).
  // Either `c[0, n)` holds (weight, id) of the survivors, or (by_id) weights_ holds every weight.
  int32_t n = 0;
  double mass = 0.0;
  bool by_id = false;
  if (use_top_k) {
    n = select_top(logits, vocab_size_, params_.top_k, c);
    float max_logit = neg_inf;
    for (int32_t i = 0; i < n; ++i) max_logit = std::max(max_logit, c[i].first);
    if (n == 0 || !std::isfinite(max_logit)) return n == 0 ? 0 : std::min_element(c, c + n, more_likely)->second;
    for (int32_t i = 0; i < n; ++i) {
      c[i].first = std::exp((c[i].first - max_logit) * inv_temperature);
      mass += c[i].first;
    }
    if (use_top_p) n = most_likely_prefix(c, n, static_cast<double>(params_.top_p) * mass);
  } else {
    if (weights_hold_raw) {
      mass = raw_mass;
    } else {
      const float max_logit = max_value(logits, vocab_size_);
      // No finite maximum (all -inf / NaN, or +inf logits): no distribution to draw from.
      if (!std::isfinite(max_logit)) {
        const float* const best = std::find(logits, logits + vocab_size_, max_logit);
        return best == logits + vocab_size_ ? 0 : static_cast<int32_t>(best - logits);
      }
      mass = sum_exp(logits, vocab_size_, max_logit, inv_temperature, weights_.data());
    }
    if (use_top_p) {
      n = nucleus(static_cast<double>(params_.top_p) * mass);
    } else {
      n = vocab_size_;
      by_id = true;
    }
  }

  // Min-p: the top weight is 1, so "prob < min_p * max prob" is "weight < min_p", and needs no
  // renormalisation first. The top token always survives. Then an inverse-CDF draw, summing in
  // the same order as `mass` where it matters.
  const float min_weight = params_.min_p;
  auto weight_at = [&](int32_t i) { return by_id ? weights_[i] : c[i].first; };
  auto id_at = [&](int32_t i) { return by_id ? i : c[i].second; };
  if (min_weight > 0.0f || !by_id) {
    mass = 0.0;
    for (int32_t i = 0; i < n; ++i) {
      const float weight = weight_at(i);
      if (weight >= min_weight) mass += weight;
    }
  }
  const double threshold = uniform01(rng_) * mass;
  double cumulative = 0.0;
  int32_t last_kept = id_at(0);
  for (int32_t i = 0; i < n; ++i) {
    const float weight = weight_at(i);
    if (!(weight >= min_weight) || weight == 0.0f) continue;
    cumulative += weight;
    last_kept = id_at(i);
    if (threshold < cumulative) return last_kept;
  }
  return last_kept;  // rounding: threshold reached the total
}

sample_result sampler::sample(float* logits) {
  sample_result result;
  const bool greedy = params_.is_greedy();

  // Raw distribution first, before the penalties overwrite anything: the max (from the top list
  // when one is asked for), then the log-sum-exp with it subtracted. When the draw will use exactly
  // these weights (temperature 1, checked below for penalties) keep them in weights_.
  const int32_t num_top = std::min<int32_t>(params_.top_logprobs, vocab_size_);
  std::array<candidate, max_top_logprobs> top;
  float raw_max = neg_inf;
  if (num_top > 0) {
    result.num_top = select_top(logits, vocab_size_, num_top, top.data());
    std::sort(top.begin(), top.begin() + result.num_top, more_likely);
    if (result.num_top > 0) raw_max = top[0].first;
  } else {
    raw_max = max_value(logits, vocab_size_);
  }
  const bool raw_weights_usable = !greedy && params_.temperature == 1.0f && std::isfinite(raw_max) &&
                                  !(params_.top_k > 0 && params_.top_k < vocab_size_);
  const double raw_mass = sum_exp(logits, vocab_size_, raw_max, 1.0f, raw_weights_usable ? weights_.data() : nullptr);
  const double log_sum_exp = static_cast<double>(raw_max) + std::log(raw_mass);

  apply_penalties(logits);

  int32_t token = 0;
  if (greedy && penalized_raw_.empty() && std::isfinite(raw_max)) {
    // Nothing penalised: the argmax is the first occurrence of the raw max found above (lowest id on
    // ties; NaN never compares equal), a scan that stops there.
    token = first_equal(logits, vocab_size_, raw_max);
  } else if (greedy) {
    // One pass; strict > keeps the lowest id on ties and passes over NaN.
    float best = neg_inf;
    for (int32_t i = 0; i < vocab_size_; ++i) {
      if (logits[i] > best) {
        best = logits[i];
        token = i;
      }
    }
  } else {
    token = draw(logits, raw_weights_usable && penalized_raw_.empty(), raw_mass);
  }

  result.token = token;
  result.logprob = static_cast<float>(static_cast<double>(raw_logit(logits, token)) - log_sum_exp);
  for (int32_t i = 0; i < result.num_top; ++i) {
    result.top[i] = {top[i].second, static_cast<float>(static_cast<double>(top[i].first) - log_sum_exp)};
  }

  if (output_counts_[token]++ == 0) output_seen_.push_back(token);
  return result;
}

}  // namespace inflight
