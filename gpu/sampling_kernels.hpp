// On-device token sampling: one launch turns fp32 logits [rows][vocab] into one sampled token per row,
// with the chosen token's log-probability and up to 20 top log-probabilities, so logits never cross to
// the host. The semantics are the CPU sampler's (include/inflight/sampling.hpp, vLLM's):
//
//   repetition / presence / frequency penalties -> temperature -> top-k -> top-p -> min-p -> draw
//
// - temperature < 1e-5 is greedy: the argmax of the penalised logits, lowest id on ties.
// - top_k <= 0 or >= vocab: off. top_p == 1: off. min_p == 0: off.
// - Ranking: logits descending, lowest id first on ties; NaN logits are never chosen nor reported.
//   top-k keeps the first k of that order; top-p the shortest prefix of the top-k survivors whose mass
//   (softmax of logits / T) reaches top_p of theirs; min-p the tokens whose probability is at least
//   min_p times the top one's. The kept set is a prefix of the order in every case.
// - Reported log-probabilities are those of the RAW distribution (log_softmax of the logits before
//   penalties and temperature), as vLLM returns by default: the chosen token's, and the num_top_logprobs
//   most likely raw tokens, most likely first (ties: lowest id first).
// - Draws are a function of (seed, rng_step, the kept logits): the same seed and step give the same
//   token whatever the batch around the row. The exact random stream differs from the CPU sampler's.
//
// Launch: one CTA of 1024 threads per row; no allocation, no host synchronisation: capturable in a
// CUDA graph. The row's RNG step counter lives in device memory (device_sampling_params::rng_step)
// and the kernel increments it, so replaying a captured graph draws new numbers.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace inflight::gpu {

constexpr int32_t sampling_max_top_logprobs = 20;  // OpenAI's limit, = inflight::max_top_logprobs

// Per-row sampling parameters, one per logits row, in device memory (a plain struct the host fills).
struct device_sampling_params {
  float temperature = 1.0f;         // < 1e-5: greedy
  int32_t top_k = 0;                // <= 0 or >= vocab: off
  float top_p = 1.0f;               // (0, 1]; 1: off
  float min_p = 0.0f;               // [0, 1]; 0: off
  float repetition_penalty = 1.0f;  // > 0; 1: off. Prompt and generated tokens (every listed token).
  float presence_penalty = 0.0f;    // generated tokens (listed with generated_count > 0)
  float frequency_penalty = 0.0f;   // times generated_count
  int32_t num_top_logprobs = 0;     // 0..20 raw top log-probabilities to report
  int32_t want_logprob = 1;         // 0: skip the raw log-sum-exp; the row's logprobs are then 0
  int32_t reserved = 0;             // padding (keeps the 64-bit fields aligned); set 0
  uint64_t seed = 0;                // the host picks a random one for requests without a seed
  uint64_t rng_step = 0;            // the draw uses Philox(seed, rng_step); the kernel writes rng_step + 1
};
// Host and device share this layout (the host fills an array and copies it over).
static_assert(sizeof(device_sampling_params) == 56, "device_sampling_params layout");

// The tokens each row penalises: a ragged list the host keeps up to date (append a generated token or
// bump its count each step). Row r's entries are [offsets[r], offsets[r + 1]); a row without penalties
// has an empty range and costs nothing, and so does a row whose three penalties are all neutral.
// Each listed token must appear once per row (the prompt's tokens and the generated ones, merged; a
// duplicate would be penalised twice and its raw logit not restored — device_samplers keeps them unique):
// repetition_penalty applies once to every listed token, presence and frequency to those with
// generated_count > 0. Ids outside [0, vocab) are ignored.
struct device_penalty_lists {
  const int32_t* offsets = nullptr;           // [rows + 1]; nullptr: no row has penalties
  const int32_t* tokens = nullptr;            // [offsets[rows]]
  const int32_t* generated_counts = nullptr;  // [offsets[rows]]: times generated; 0 = prompt only
  // [offsets[rows]] scratch: the penalties are applied to the logits in place (the CPU sampler does
  // the same) and the raw values saved here; the kernel restores them before it ends, so from the
  // caller's side the logits are unchanged. Sized like `tokens`.
  float* saved_logits = nullptr;
};

// What each row's sampling produced, the device image of inflight::sample_result.
struct device_sample_outputs {
  int32_t* tokens = nullptr;        // [rows]
  float* logprobs = nullptr;        // [rows]: of the token, under the raw distribution
  int32_t* num_top = nullptr;       // [rows]: min(num_top_logprobs, non-NaN logits)
  int32_t* top_tokens = nullptr;    // [rows][20], most likely first; -1 past num_top
  float* top_logprobs = nullptr;    // [rows][20]; 0 past num_top
};

// Samples one token per row of `logits` ([rows][vocab_size] fp32, row-major, rows contiguous).
// `logits` is modified while the kernel runs (penalties, restored at the end): nothing else may read
// it concurrently. `params` is read and each row's rng_step incremented. Rows are independent; the
// host should give padded rows greedy params. Throws std::invalid_argument naming a bad argument.
void launch_sample(float* logits, int32_t rows, int32_t vocab_size, device_sampling_params* params,
                   const device_penalty_lists& penalties, const device_sample_outputs& outputs,
                   cudaStream_t stream);

}  // namespace inflight::gpu
