// Per-sequence token sampling on the host: penalties, temperature, top-k, top-p, min-p, seeded RNG,
// and the log-probabilities OpenAI clients ask for.
//
// Order of operations (as vLLM): logit bias -> repetition/presence/frequency penalties -> temperature -> top-k ->
// top-p -> min-p -> draw. temperature == 0 is greedy (argmax, lowest id on ties, like llama.cpp).
// Reported log-probabilities are those of the model's raw distribution (log_softmax of the logits
// before any of the above), which is what vLLM returns by default. Temperatures below 1e-5 count as greedy.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <random>
#include <span>
#include <utility>
#include <vector>

namespace inflight {

struct sampling_params {
  float temperature = 1.0f;          // 0 = greedy
  int32_t top_k = 0;                 // <= 0: disabled
  float top_p = 1.0f;                // in (0, 1]; 1 = disabled
  float min_p = 0.0f;                // in [0, 1]; 0 = disabled
  float repetition_penalty = 1.0f;   // > 0; 1 = disabled; applies to prompt and generated tokens
  float presence_penalty = 0.0f;     // [-2, 2]; applies to generated tokens
  float frequency_penalty = 0.0f;    // [-2, 2]; applies to generated tokens
  std::optional<uint64_t> seed;      // set: reproducible draws for this sequence
  int32_t top_logprobs = 0;          // 0..max_top_logprobs alternatives to report per token
  bool logprobs = false;             // report the chosen token's log-probability
  // OpenAI's logit_bias: (token id, value in [-100, 100]) added to that token's logit before everything
  // else (as vLLM does, before the penalties); -100 all but bans a token, 100 all but forces it. Distinct
  // ids, at most max_logit_bias of them; the ids' range is the caller's to check against the vocabulary.
  std::vector<std::pair<int32_t, float>> logit_bias;
  static constexpr size_t max_logit_bias = 1024;

  // Below this temperature sampling is greedy, as vLLM does (_SAMPLING_EPS): 1 / T would overflow and a
  // draw could differ from the argmax only between exactly tied logits.
  static constexpr float greedy_below_temperature = 1e-5f;
  bool is_greedy() const { return temperature < greedy_below_temperature; }
};

// Returns an empty string when the params are valid, otherwise a message naming the bad field.
const char* validate(const sampling_params& params);

struct token_logprob {
  int32_t token = -1;
  float logprob = 0.0f;
};

constexpr int max_top_logprobs = 20;  // OpenAI's limit

struct sample_result {
  int32_t token = -1;
  float logprob = 0.0f;  // of `token` under the raw distribution (always computed)
  int32_t num_top = 0;
  std::array<token_logprob, max_top_logprobs> top{};  // most likely first
};

// One sequence's sampling state: its params, RNG and token counts for the penalties.
// Scratch buffers are sized once; sampling a token allocates nothing.
class sampler {
 public:
  sampler(const sampling_params& params, int32_t vocab_size);

  // Tokens of the prompt (they count for the repetition penalty only).
  void set_prompt(std::span<const int32_t> prompt_tokens);
  // Picks the next token from `logits` (vocab_size values; modified in place) and records it.
  sample_result sample(float* logits);

  const sampling_params& params() const { return params_; }

 private:
  // Applies the logit bias and the penalties to `logits` in place, first saving the raw values it overwrites in
  // penalized_raw_, so the chosen token's raw log-probability can still be reported.
  void apply_penalties(float* logits);
  // Top-k -> top-p -> min-p -> draw, on the penalised logits. `weights_hold_raw`: weights_ already
  // holds exp(logit - max) of these very logits (temperature 1, nothing penalised), with sum `raw_mass`.
  int32_t draw(const float* logits, bool weights_hold_raw, double raw_mass);
  // Top-p over the whole vocabulary from weights_: writes the nucleus to candidates_, returns its size.
  int32_t nucleus(double target_mass);
  // The logit `token` had before apply_penalties.
  float raw_logit(const float* logits, int32_t token) const;

  sampling_params params_;
  int32_t vocab_size_;
  std::mt19937_64 rng_;
  std::vector<int32_t> prompt_tokens_;     // sorted, unique, all in [0, vocab_size)
  std::vector<int32_t> output_counts_;     // per vocab id: times generated (sized once)
  std::vector<int32_t> output_seen_;       // ids with output_counts_ > 0, in first-seen order;
                                           // capacity vocab_size, so push_back never allocates
  // Scratch, sized at construction so that sample() never allocates:
  std::vector<std::pair<int32_t, float>> penalized_raw_;  // (id, raw logit); capacity vocab_size
  std::vector<std::pair<float, int32_t>> candidates_;     // (logit, then weight; id); vocab_size
  std::vector<float> weights_;                            // per id: exp((logit - max) / T)
  std::vector<double> bucket_mass_;                       // top-p histogram over weight magnitudes
};

}  // namespace inflight
