// On-device sampling: one CTA of 1024 threads per logits row. See sampling_kernels.hpp for the contract;
// the comments here are about how and why.
//
// Every step is a streaming pass over the row (float4 loads; a 128k-vocabulary row is 501 KiB, which
// stays in L2 between passes), with block reductions between passes:
//
//   raw pass       argmax, max and sum of exp of the RAW logits (online softmax per thread)
//   top-N          radix select of the N-th most likely raw token, a collect pass, a rank sort of <= 20
//   penalties      applied in place to the (sparse) listed tokens, raw values saved; restored at the end
//   greedy         the raw argmax, or one argmax pass when something was penalised
//   top-k          radix select, count measure
//   top-p          radix select, mass measure, over the top-k survivors
//   draw           one pass: min-p test, Gumbel-max (exponential race) over the kept tokens
//
// The order. Tokens are ranked by the 64-bit key (order-preserving bits of the logit << 32 | ~id):
// larger key = more likely, lowest id first on ties; NaN maps to 0, below everything, and is never
// kept. top-k, top-p and min-p each keep a prefix of that order, so the kept set is `key >= threshold`
// (plus the min-p test), one number per filter.
//
// Radix select finds the shortest prefix of the order whose measure (1 per token for top-k, the
// token's weight for top-p) reaches a target: 8-bit digits from the top of the key, a 256-bin
// histogram of the measure per pass, the bin where the cumulative measure crosses the target is kept
// open and refined; bins above it are in, bins below out. It stops as soon as that bin holds one token
// or all of it is needed (for continuous logits: 3 or 4 digits; ties reach into the id bits). When the
// open bin holds <= 2048 tokens the next pass copies them to shared memory and the remaining digits
// are histogrammed there.
//
// Determinism. Masses are fixed point (weight * 2^40 in 64-bit integers: the sum of a 128k vocabulary
// cannot overflow, weights under 2^-41 of the top one count as 0), so histogram atomics are exact and
// order-free; float sums are per-thread then a fixed tree; the draw uses one Philox4x32-10 number per
// token, keyed by (seed, rng_step) and counted by the token id, never by the thread. A row's token is
// therefore a pure function of its logits, params and step, whatever the launch shape.
//
// The draw is the exponential race vLLM's sampler uses (probs / Exp(1) noise, argmax), written as
// Gumbel-max in log space: argmax over kept tokens of (logit - max) / T - log(E), E ~ Exp(1). It needs
// no normalisation, no sort and no prefix sum, and P(token) = its weight / the kept mass exactly (up to
// the 23-bit uniforms).
//
// Histogram contention: logits cluster in few bins of the top digit, and 32 lanes adding to one shared
// counter serialise. Each add is warp-aggregated first (__match_any_sync, then __reduce_add_sync of the
// group's masses in two 20-bit halves, then one atomic per distinct bin).
#include "sampling_kernels.hpp"

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#include "cuda_check.hpp"

namespace inflight::gpu {

namespace {

constexpr int block_threads = 1024;
constexpr int num_warps = block_threads / 32;
constexpr int block_elements = block_threads * 4;  // a row pass reads a float4 per thread per iteration
constexpr int list_capacity = 2048;                // tokens the radix select refines in shared memory
constexpr int num_bins = 256;                      // 8-bit digits of the 64-bit rank key
constexpr int key_digits = 8;
constexpr unsigned full_mask = 0xffffffffu;
constexpr float greedy_below_temperature = 1e-5f;  // sampling_params::greedy_below_temperature
constexpr float mass_scale = 0x1p40f;              // fixed-point weights: a weight of 1 is 2^40
static_assert(block_threads >= num_bins && block_threads % 32 == 0, "one thread per histogram bin");

// --- Keys ------------------------------------------------------------------------------------------

__host__ __device__ inline uint32_t float_bits(float value) {
#ifdef __CUDA_ARCH__
  return __float_as_uint(value);
#else
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  return bits;
#endif
}

__host__ __device__ inline float bits_float(uint32_t bits) {
#ifdef __CUDA_ARCH__
  return __uint_as_float(bits);
#else
  float value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
#endif
}

// Order-preserving: a < b as floats iff ordered_key(a) < ordered_key(b). -0 ranks as +0 (they are
// equal logits, so ties go to the lowest id). NaN maps to 0, below -inf (0x007fffff): never selected.
__host__ __device__ inline uint32_t ordered_key(float value) {
  if (value != value) return 0u;
  const uint32_t bits = value == 0.0f ? 0u : float_bits(value);
  return (bits & 0x80000000u) != 0 ? ~bits : (bits | 0x80000000u);
}

__host__ __device__ inline float key_value(uint32_t key) {
  return bits_float((key & 0x80000000u) != 0 ? (key & 0x7fffffffu) : ~key);
}

// Larger = more likely: the logit, then the lower id. Unique per token.
__host__ __device__ inline uint64_t rank_key(float value, int32_t id) {
  return (static_cast<uint64_t>(ordered_key(value)) << 32) | static_cast<uint32_t>(~static_cast<uint32_t>(id));
}

__host__ __device__ inline int32_t rank_key_id(uint64_t key) {
  return static_cast<int32_t>(~static_cast<uint32_t>(key));
}

__host__ __device__ inline bool rank_key_is_nan(uint64_t key) { return (key >> 32) == 0; }

// --- Random numbers --------------------------------------------------------------------------------

// Philox4x32-10 (Salmon et al., SC'11; the generator behind curand's Philox4_32_10 and PyTorch's CUDA
// RNG), written out so that no curand header (and its tables) is pulled in.
__host__ __device__ inline void philox4x32_10(uint32_t (&counter)[4], uint32_t key0, uint32_t key1) {
  for (int round = 0; round < 10; ++round) {
    const uint64_t product0 = static_cast<uint64_t>(0xD2511F53u) * counter[0];
    const uint64_t product1 = static_cast<uint64_t>(0xCD9E8D57u) * counter[2];
    const uint32_t next0 = static_cast<uint32_t>(product1 >> 32) ^ counter[1] ^ key0;
    const uint32_t next2 = static_cast<uint32_t>(product0 >> 32) ^ counter[3] ^ key1;
    counter[1] = static_cast<uint32_t>(product1);
    counter[3] = static_cast<uint32_t>(product0);
    counter[0] = next0;
    counter[2] = next2;
    key0 += 0x9E3779B9u;
    key1 += 0xBB67AE85u;
  }
}

// The four random words of tokens 4q .. 4q + 3 at this (seed, step): a pure function of the token id.
__host__ __device__ inline void token_random_bits(uint64_t seed, uint64_t step, uint32_t quad, uint32_t (&bits)[4]) {
  bits[0] = quad;
  bits[1] = 0u;
  bits[2] = static_cast<uint32_t>(step);
  bits[3] = static_cast<uint32_t>(step >> 32);
  philox4x32_10(bits, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

// A uniform in (0, 1) from the top 23 bits, (2m + 1) / 2^24: exactly representable, never 0 nor 1, so
// E = -log(1 - u) ~ Exp(1) is finite and > 0 (log1p keeps it accurate near 0).
__device__ inline float exponential_from_bits(uint32_t bits) {
  const float uniform = static_cast<float>(bits >> 9) * 0x1p-23f + 0x1p-24f;
  return -log1pf(-uniform);
}

// --- Shared state ------------------------------------------------------------------------------------

struct softmax_stats {
  float max;
  float sum;  // of exp(x - max)
};

struct sampler_shared {
  unsigned long long hist_mass[num_bins];  // measure per bin (count or fixed-point mass)
  unsigned int hist_count[num_bins];       // tokens per bin
  unsigned long long list_keys[list_capacity];
  unsigned long long list_mass[list_capacity];
  unsigned long long reduce_keys[num_warps];
  softmax_stats reduce_stats[num_warps];
  unsigned long long top_keys[sampling_max_top_logprobs];
  // Radix select state, written by one lane of warp 0 between barriers.
  unsigned long long prefix;     // digits chosen so far
  unsigned long long remaining;  // measure still needed from the open bin
  unsigned long long threshold;  // the result: keep key >= threshold
  int depth;                     // digits chosen
  int done;
  int collect_next;  // the next row pass copies the open bin to list_*
  unsigned int list_size;
  unsigned int top_size;
};

// --- Row access --------------------------------------------------------------------------------------

struct row_view {
  float* data;      // written by the penalty phase: plain loads only (no __ldg / read-only cache)
  int32_t vocab;
  int32_t iterations;  // ceil(vocab / block_elements): the same for every thread (warp intrinsics inside)
  bool vectorized;     // vocab % 4 == 0 and the base is 16-byte aligned
};

// Tokens base .. base + 3 (base a multiple of 4); past the end of the row they read as NaN (never kept).
__device__ inline void load_quad(const row_view& row, int32_t base, float (&values)[4]) {
  if (row.vectorized && base < row.vocab) {
    const float4 quad = *reinterpret_cast<const float4*>(row.data + base);
    values[0] = quad.x;
    values[1] = quad.y;
    values[2] = quad.z;
    values[3] = quad.w;
  } else {
#pragma unroll
    for (int j = 0; j < 4; ++j) values[j] = base + j < row.vocab ? row.data[base + j] : __int_as_float(0x7fffffff);
  }
}

__device__ inline int32_t quad_base(int iteration) {
  return (iteration * block_threads + static_cast<int32_t>(threadIdx.x)) * 4;
}

// --- Reductions ----------------------------------------------------------------------------------------

__device__ inline unsigned long long max_u64(unsigned long long a, unsigned long long b) { return a > b ? a : b; }

// Every thread gets the block's maximum. The first barrier protects the scratch from a previous use.
__device__ unsigned long long block_max(unsigned long long value, sampler_shared& shared) {
  for (int offset = 16; offset > 0; offset >>= 1) value = max_u64(value, __shfl_xor_sync(full_mask, value, offset));
  __syncthreads();
  if ((threadIdx.x & 31) == 0) shared.reduce_keys[threadIdx.x >> 5] = value;
  __syncthreads();
  unsigned long long result = shared.reduce_keys[0];
  for (int warp = 1; warp < num_warps; ++warp) result = max_u64(result, shared.reduce_keys[warp]);
  return result;
}

__device__ inline softmax_stats merge(softmax_stats a, softmax_stats b) {
  if (b.max > a.max) {
    const softmax_stats t = a;
    a = b;
    b = t;
  }
  if (b.max == -INFINITY) return a;  // b empty (both empty: a is)
  // Equal maxima (+inf included, where the difference would be NaN) need no scaling.
  return {a.max, a.sum + b.sum * (a.max == b.max ? 1.0f : expf(b.max - a.max))};
}

// Adds one token to the online softmax of a thread: NaN and -inf contribute nothing.
__device__ inline void accumulate(softmax_stats& stats, float value) {
  if (!(value > -INFINITY)) return;
  if (value > stats.max) {
    stats.sum = stats.sum * expf(stats.max - value) + 1.0f;  // max = -inf at first: 0 * 0 + 1
    stats.max = value;
  } else {
    stats.sum += value == stats.max ? 1.0f : expf(value - stats.max);
  }
}

// Fixed order (lane tree, then warps 0..31): the same bits on every run.
__device__ softmax_stats block_softmax(softmax_stats stats, sampler_shared& shared) {
  for (int offset = 16; offset > 0; offset >>= 1) {
    const softmax_stats other{__shfl_xor_sync(full_mask, stats.max, offset), __shfl_xor_sync(full_mask, stats.sum, offset)};
    stats = merge(stats, other);
  }
  __syncthreads();
  if ((threadIdx.x & 31) == 0) shared.reduce_stats[threadIdx.x >> 5] = stats;
  __syncthreads();
  softmax_stats result = shared.reduce_stats[0];
  for (int warp = 1; warp < num_warps; ++warp) result = merge(result, shared.reduce_stats[warp]);
  return result;
}

// --- Radix select --------------------------------------------------------------------------------------

// Fixed-point weight of a logit: exp((logit - max) / T) * 2^40, in [0, 2^40].
__device__ inline unsigned long long fixed_point_mass(float value, float max_logit, float inv_temperature) {
  const float weight = expf((value - max_logit) * inv_temperature);
  return __float2ull_rn(weight * mass_scale);
}

// Adds `measure` to histogram bin `bin` for the active lanes, one shared atomic per distinct bin per
// warp. Every lane of the warp must call it (it synchronises the warp).
template <bool kMass>
__device__ inline void histogram_add(sampler_shared& shared, bool active, unsigned int bin, unsigned long long measure) {
  const unsigned int label = active ? bin : static_cast<unsigned int>(num_bins);
  const unsigned int peers = __match_any_sync(full_mask, label);
  if (!active) return;
  const bool leader = __ffs(peers) - 1 == static_cast<int>(threadIdx.x & 31);
  if constexpr (kMass) {
    // measure <= 2^40: two 20-bit halves, each summing to < 2^25 over 32 lanes.
    const unsigned int low = __reduce_add_sync(peers, static_cast<unsigned int>(measure & 0xFFFFFu));
    const unsigned int high = __reduce_add_sync(peers, static_cast<unsigned int>(measure >> 20));
    if (leader) atomicAdd(&shared.hist_mass[bin], (static_cast<unsigned long long>(high) << 20) + low);
  } else {
    if (leader) atomicAdd(&shared.hist_mass[bin], static_cast<unsigned long long>(__popc(peers)));
  }
  if (leader) atomicAdd(&shared.hist_count[bin], static_cast<unsigned int>(__popc(peers)));
}

// One histogram pass over the row at digit `depth`: tokens that are not NaN, have key >= restrict_to
// and match the chosen prefix. With `collect`, they are also copied to the shared list (the previous
// pass counted them: at most list_capacity).
template <bool kMass>
__device__ void row_histogram(const row_view& row, sampler_shared& shared, int depth, unsigned long long prefix,
                              unsigned long long restrict_to, float max_logit, float inv_temperature, bool collect) {
  const int digit_shift = 56 - 8 * depth;
  const int prefix_shift = 64 - 8 * depth;  // used only when depth > 0
  for (int iteration = 0; iteration < row.iterations; ++iteration) {
    const int32_t base = quad_base(iteration);
    float values[4];
    load_quad(row, base, values);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const unsigned long long key = rank_key(values[j], base + j);
      const bool active = !rank_key_is_nan(key) && key >= restrict_to && (depth == 0 || (key >> prefix_shift) == prefix);
      unsigned long long measure = 1;
      if (kMass && active) measure = fixed_point_mass(values[j], max_logit, inv_temperature);
      histogram_add<kMass>(shared, active, static_cast<unsigned int>(key >> digit_shift) & 0xFFu, measure);
      if (collect && active) {
        const unsigned int slot = atomicAdd(&shared.list_size, 1u);
        if (slot < list_capacity) {
          shared.list_keys[slot] = key;
          shared.list_mass[slot] = measure;
        }
      }
    }
  }
}

// The same over the shared list (depth >= 2 here: the list is filled at depth >= 1).
template <bool kMass>
__device__ void list_histogram(sampler_shared& shared, int depth, unsigned long long prefix) {
  const unsigned int size = min(shared.list_size, static_cast<unsigned int>(list_capacity));
  const int iterations = static_cast<int>((size + block_threads - 1) / block_threads);
  const int digit_shift = 56 - 8 * depth;
  const int prefix_shift = 64 - 8 * depth;
  for (int iteration = 0; iteration < iterations; ++iteration) {
    const unsigned int i = static_cast<unsigned int>(iteration * block_threads) + threadIdx.x;
    const bool in_list = i < size;
    const unsigned long long key = in_list ? shared.list_keys[i] : 0ull;
    const unsigned long long measure = in_list ? shared.list_mass[i] : 0ull;
    const bool active = in_list && (key >> prefix_shift) == prefix;
    histogram_add<kMass>(shared, active, static_cast<unsigned int>(key >> digit_shift) & 0xFFu, measure);
  }
}

// Warp 0, after a histogram pass: picks the bin where the cumulative measure (from the most likely bin
// down) reaches what is still needed, and either finishes (threshold) or opens the bin for the next
// digit. At depth 0 the target comes from the total: count_target, or ceil(top_p * total mass).
__device__ void choose_bin(sampler_shared& shared, int depth, unsigned long long prefix, bool list_mode,
                           bool mass_mode, unsigned long long count_target, float top_p) {
  const int lane = static_cast<int>(threadIdx.x & 31);
  // Lane l holds bins 255 - 8l down to 248 - 8l: lane 0 the most likely.
  unsigned long long local = 0;
#pragma unroll
  for (int j = 0; j < 8; ++j) local += shared.hist_mass[255 - 8 * lane - j];
  unsigned long long inclusive = local;
#pragma unroll
  for (int offset = 1; offset < 32; offset <<= 1) {
    const unsigned long long up = __shfl_up_sync(full_mask, inclusive, offset);
    if (lane >= offset) inclusive += up;
  }
  unsigned long long remaining = shared.remaining;
  if (depth == 0) {
    const unsigned long long total = __shfl_sync(full_mask, inclusive, 31);
    if (mass_mode) {
      // The CPU keeps the shortest prefix with kept >= top_p * mass; at least the top token.
      const double target = ceil(static_cast<double>(top_p) * static_cast<double>(total));
      const double clamped = fmin(fmax(target, 1.0), static_cast<double>(total > 0 ? total : 1));
      remaining = static_cast<unsigned long long>(clamped);
      if (remaining > total && total > 0) remaining = total;  // double rounding of a total above 2^53
    } else {
      remaining = count_target;
    }
  }
  const unsigned int found = __ballot_sync(full_mask, inclusive >= remaining);
  if (found == 0) {  // fewer tokens (or less mass) than the target: keep everything
    if (lane == 0) {
      shared.threshold = 0;
      shared.done = 1;
    }
    return;
  }
  if (lane != __ffs(found) - 1) return;
  unsigned long long before = inclusive - local;
  int bin = 248 - 8 * lane;
  for (int j = 0; j < 8; ++j) {
    const int candidate = 255 - 8 * lane - j;
    if (before + shared.hist_mass[candidate] >= remaining) {
      bin = candidate;
      break;
    }
    before += shared.hist_mass[candidate];
  }
  remaining -= before;  // in (0, hist_mass[bin]]
  const unsigned long long chosen = (prefix << 8) | static_cast<unsigned long long>(bin);
  const int chosen_depth = depth + 1;
  const unsigned int count = shared.hist_count[bin];
  if (count <= 1 || remaining == shared.hist_mass[bin] || chosen_depth == key_digits) {
    // The whole bin is in: every key with this prefix, and nothing below it.
    shared.threshold = chosen << (64 - 8 * chosen_depth);
    shared.done = 1;
  } else {
    shared.prefix = chosen;
    shared.depth = chosen_depth;
    shared.remaining = remaining;
    shared.collect_next = !list_mode && count <= static_cast<unsigned int>(list_capacity) ? 1 : 0;
  }
}

// The smallest threshold such that the tokens with key >= threshold (among the non-NaN ones with key >=
// restrict_to) are the shortest most-likely prefix whose measure reaches the target: count_target tokens
// (kMass false) or top_p of the mass (kMass true). 0 keeps everything. Uniform across the block.
template <bool kMass>
__device__ unsigned long long radix_select(const row_view& row, sampler_shared& shared, unsigned long long restrict_to,
                                           float max_logit, float inv_temperature, unsigned long long count_target,
                                           float top_p) {
  __syncthreads();  // nobody still reads a previous selection's state
  if (threadIdx.x == 0) {
    shared.prefix = 0;
    shared.remaining = 0;
    shared.threshold = 0;
    shared.depth = 0;
    shared.done = 0;
    shared.collect_next = 0;
  }
  bool list_mode = false;
  for (;;) {
    __syncthreads();  // the state written by choose_bin (or the reset) is visible; the histogram is free
    if (shared.done) break;
    const int depth = shared.depth;
    const unsigned long long prefix = shared.prefix;
    const bool collect = shared.collect_next != 0;
    if (threadIdx.x < num_bins) {
      shared.hist_mass[threadIdx.x] = 0;
      shared.hist_count[threadIdx.x] = 0;
    }
    if (threadIdx.x == 0 && collect) shared.list_size = 0;
    __syncthreads();
    if (list_mode) {
      list_histogram<kMass>(shared, depth, prefix);
    } else {
      row_histogram<kMass>(row, shared, depth, prefix, restrict_to, max_logit, inv_temperature, collect);
    }
    if (collect) list_mode = true;
    __syncthreads();
    if (threadIdx.x < 32) choose_bin(shared, depth, prefix, list_mode, kMass, count_target, top_p);
  }
  return shared.threshold;
}

// --- Passes ----------------------------------------------------------------------------------------------

// The raw pass: the argmax key and (with `want_sum`) the softmax statistics of the logits as they are.
__device__ void raw_pass(const row_view& row, sampler_shared& shared, bool want_sum, unsigned long long& best_key,
                         softmax_stats& stats) {
  unsigned long long best = 0;
  softmax_stats local{-INFINITY, 0.0f};
  for (int iteration = 0; iteration < row.iterations; ++iteration) {
    const int32_t base = quad_base(iteration);
    float values[4];
    load_quad(row, base, values);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      best = max_u64(best, rank_key(values[j], base + j));
      if (want_sum) accumulate(local, values[j]);
    }
  }
  best_key = block_max(best, shared);
  if (want_sum) stats = block_softmax(local, shared);
}

__device__ unsigned long long argmax_pass(const row_view& row, sampler_shared& shared) {
  unsigned long long best = 0;
  for (int iteration = 0; iteration < row.iterations; ++iteration) {
    const int32_t base = quad_base(iteration);
    float values[4];
    load_quad(row, base, values);
#pragma unroll
    for (int j = 0; j < 4; ++j) best = max_u64(best, rank_key(values[j], base + j));
  }
  return block_max(best, shared);
}

// The tokens with key >= threshold (at most 20 by construction) into shared.top_keys; returns how many.
__device__ int collect_top(const row_view& row, sampler_shared& shared, unsigned long long threshold) {
  __syncthreads();
  if (threadIdx.x == 0) shared.top_size = 0;
  __syncthreads();
  for (int iteration = 0; iteration < row.iterations; ++iteration) {
    const int32_t base = quad_base(iteration);
    float values[4];
    load_quad(row, base, values);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const unsigned long long key = rank_key(values[j], base + j);
      if (!rank_key_is_nan(key) && key >= threshold) {
        const unsigned int slot = atomicAdd(&shared.top_size, 1u);
        if (slot < sampling_max_top_logprobs) shared.top_keys[slot] = key;
      }
    }
  }
  __syncthreads();
  return static_cast<int>(min(shared.top_size, static_cast<unsigned int>(sampling_max_top_logprobs)));
}

// Gumbel-max over the kept tokens: key >= threshold and (min_p > 0) weight >= min_p. Returns the winning
// key (0 if nothing was kept, which only invalid params can cause).
__device__ unsigned long long draw_pass(const row_view& row, sampler_shared& shared, unsigned long long threshold,
                                        float max_logit, float inv_temperature, float min_p, uint64_t seed,
                                        uint64_t step) {
  const bool use_min_p = !(min_p <= 0.0f);  // NaN min_p keeps nothing: the caller falls back to the argmax
  unsigned long long best = 0;
  for (int iteration = 0; iteration < row.iterations; ++iteration) {
    const int32_t base = quad_base(iteration);
    float values[4];
    load_quad(row, base, values);
    float scaled[4];
    bool kept[4];
    bool any = false;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const unsigned long long key = rank_key(values[j], base + j);
      scaled[j] = (values[j] - max_logit) * inv_temperature;  // <= 0; log of the weight
      kept[j] = !rank_key_is_nan(key) && key >= threshold && (!use_min_p || expf(scaled[j]) >= min_p);
      any = any || kept[j];
    }
    if (!any) continue;  // no warp intrinsics below: divergence is fine
    uint32_t bits[4];
    token_random_bits(seed, step, static_cast<uint32_t>(base >> 2), bits);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      if (!kept[j]) continue;
      const float gumbel_key = scaled[j] - logf(exponential_from_bits(bits[j]));
      best = max_u64(best, rank_key(gumbel_key, base + j));
    }
  }
  return block_max(best, shared);
}

// --- The kernel --------------------------------------------------------------------------------------------

__global__ void __launch_bounds__(block_threads, 1)
    sample_kernel(float* logits, int32_t vocab, bool vectorized, device_sampling_params* params,
                  device_penalty_lists penalties, device_sample_outputs outputs) {
  __shared__ sampler_shared shared;
  const int32_t row_index = static_cast<int32_t>(blockIdx.x);
  const int tid = static_cast<int>(threadIdx.x);
  row_view row;
  row.data = logits + static_cast<int64_t>(row_index) * vocab;
  row.vocab = vocab;
  row.iterations = (vocab + block_elements - 1) / block_elements;
  row.vectorized = vectorized;

  // Every thread reads the row's params once, here; thread 0 writes rng_step back at the very end.
  const device_sampling_params p = params[row_index];
  const bool greedy = !(p.temperature >= greedy_below_temperature);  // NaN temperature: greedy
  const int num_top = min(max(p.num_top_logprobs, 0), sampling_max_top_logprobs);
  const bool want_sum = p.want_logprob != 0 || num_top > 0;

  // 1. The raw distribution: argmax, log-sum-exp.
  unsigned long long raw_best = 0;
  softmax_stats raw{-INFINITY, 0.0f};
  raw_pass(row, shared, want_sum, raw_best, raw);
  const float log_sum_exp = raw.max + logf(raw.sum);

  // 2. Top raw log-probabilities: the num_top most likely tokens, ranked.
  int top_count = 0;
  if (num_top > 0) {
    const unsigned long long threshold =
        radix_select<false>(row, shared, 0, 0.0f, 1.0f, static_cast<unsigned long long>(num_top), 1.0f);
    top_count = collect_top(row, shared, threshold);
  }
  if (tid < sampling_max_top_logprobs) {
    const int64_t out = static_cast<int64_t>(row_index) * sampling_max_top_logprobs;
    if (tid < top_count) {
      const unsigned long long key = shared.top_keys[tid];
      int rank = 0;
      for (int j = 0; j < top_count; ++j) rank += shared.top_keys[j] > key ? 1 : 0;
      outputs.top_tokens[out + rank] = rank_key_id(key);
      outputs.top_logprobs[out + rank] = key_value(static_cast<uint32_t>(key >> 32)) - log_sum_exp;
    } else {
      outputs.top_tokens[out + tid] = -1;
      outputs.top_logprobs[out + tid] = 0.0f;
    }
  }

  // 3. Penalties, in place on the listed tokens (unique per row), raw values saved.
  int32_t penalty_begin = 0;
  int32_t penalty_end = 0;
  if (penalties.offsets != nullptr) {
    penalty_begin = penalties.offsets[row_index];
    penalty_end = penalties.offsets[row_index + 1];
  }
  const bool penalize = penalty_end > penalty_begin &&
                        (p.repetition_penalty != 1.0f || p.presence_penalty != 0.0f || p.frequency_penalty != 0.0f);
  if (penalize) {
    __syncthreads();  // every read of the raw row is done
    for (int32_t j = penalty_begin + tid; j < penalty_end; j += block_threads) {
      const int32_t token = penalties.tokens[j];
      if (token < 0 || token >= vocab) continue;
      float logit = row.data[token];
      penalties.saved_logits[j] = logit;
      // HF / vLLM: shrink positive logits, push negative ones down. Then OpenAI's frequency * count and
      // presence, as two roundings like the CPU sampler (no FMA contraction).
      if (p.repetition_penalty != 1.0f) logit = logit > 0.0f ? logit / p.repetition_penalty : logit * p.repetition_penalty;
      const int32_t count = penalties.generated_counts[j];
      if (count > 0 && (p.presence_penalty != 0.0f || p.frequency_penalty != 0.0f)) {
        logit = __fsub_rn(logit, __fmul_rn(p.frequency_penalty, static_cast<float>(count)));
        logit = __fsub_rn(logit, p.presence_penalty);
      }
      row.data[token] = logit;
    }
    __syncthreads();
  }

  // 4. The token.
  const unsigned long long best = penalize ? argmax_pass(row, shared) : raw_best;
  int32_t token = rank_key_is_nan(best) ? 0 : rank_key_id(best);  // all NaN: token 0, as the CPU
  const float max_logit = key_value(static_cast<uint32_t>(best >> 32));
  if (!greedy && isfinite(max_logit)) {  // no finite maximum: no distribution, the argmax (as the CPU)
    const float inv_temperature = 1.0f / p.temperature;
    unsigned long long threshold = 0;
    if (p.top_k > 0 && p.top_k < vocab) {
      threshold = radix_select<false>(row, shared, 0, max_logit, inv_temperature,
                                      static_cast<unsigned long long>(p.top_k), 1.0f);
    }
    if (p.top_p < 1.0f) {
      const unsigned long long nucleus =
          radix_select<true>(row, shared, threshold, max_logit, inv_temperature, 0, p.top_p);
      threshold = max_u64(threshold, nucleus);
    }
    const unsigned long long drawn =
        draw_pass(row, shared, threshold, max_logit, inv_temperature, p.min_p, p.seed, p.rng_step);
    if (!rank_key_is_nan(drawn)) token = rank_key_id(drawn);
  }

  // 5. Restore the raw logits, report.
  if (penalize) {
    __syncthreads();  // every read of the penalised row is done
    for (int32_t j = penalty_begin + tid; j < penalty_end; j += block_threads) {
      const int32_t token_id = penalties.tokens[j];
      if (token_id >= 0 && token_id < vocab) row.data[token_id] = penalties.saved_logits[j];
    }
    __syncthreads();
  }
  if (tid == 0) {
    outputs.tokens[row_index] = token;
    outputs.logprobs[row_index] = p.want_logprob != 0 ? row.data[token] - log_sum_exp : 0.0f;
    outputs.num_top[row_index] = top_count;
    params[row_index].rng_step = p.rng_step + 1;
  }
}

void require(bool condition, const char* what) {
  if (!condition) throw std::invalid_argument(std::string("launch_sample: ") + what);
}

}  // namespace

void launch_sample(float* logits, int32_t rows, int32_t vocab_size, device_sampling_params* params,
                   const device_penalty_lists& penalties, const device_sample_outputs& outputs, cudaStream_t stream) {
  require(rows >= 0, "rows must be >= 0");
  require(vocab_size > 0, "vocab_size must be > 0");
  // The top-p mass is fixed point, up to 2^40 per token: a row's total fits 64 bits only below 2^24 tokens.
  require(vocab_size <= (1 << 23), "vocab_size must be <= 2^23");
  if (rows == 0) return;
  require(logits != nullptr, "logits is null");
  require(params != nullptr, "params is null");
  require(outputs.tokens != nullptr, "outputs.tokens is null");
  require(outputs.logprobs != nullptr, "outputs.logprobs is null");
  require(outputs.num_top != nullptr, "outputs.num_top is null");
  require(outputs.top_tokens != nullptr, "outputs.top_tokens is null");
  require(outputs.top_logprobs != nullptr, "outputs.top_logprobs is null");
  if (penalties.offsets != nullptr) {
    require(penalties.tokens != nullptr, "penalties.tokens is null (offsets given)");
    require(penalties.generated_counts != nullptr, "penalties.generated_counts is null (offsets given)");
    require(penalties.saved_logits != nullptr, "penalties.saved_logits is null (offsets given)");
  }
  const bool vectorized = vocab_size % 4 == 0 && reinterpret_cast<uintptr_t>(logits) % 16 == 0;
  sample_kernel<<<static_cast<unsigned int>(rows), block_threads, 0, stream>>>(logits, vocab_size, vectorized, params,
                                                                                penalties, outputs);
  INFLIGHT_CUDA_CHECK_LAUNCH();
}

}  // namespace inflight::gpu
