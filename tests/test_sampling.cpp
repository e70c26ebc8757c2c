// Sampling: validation, greedy and penalties on hand-computed cases, seeded reproducibility, the
// filtered distributions checked by drawing many samples, and the reported log-probabilities.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "inflight/sampling.hpp"

using inflight::sampler;
using inflight::sampling_params;

namespace {

constexpr float nan_value = std::numeric_limits<float>::quiet_NaN();

// Draws `draws` tokens from the same logits (restored every time: sample() modifies them) and
// returns the fraction of draws that hit each id.
std::vector<double> draw_frequencies(const sampling_params& params, const std::vector<float>& logits,
                                     int draws) {
  sampler s(params, static_cast<int32_t>(logits.size()));
  std::vector<int> counts(logits.size(), 0);
  std::vector<float> scratch;
  for (int i = 0; i < draws; ++i) {
    scratch = logits;
    ++counts[static_cast<size_t>(s.sample(scratch.data()).token)];
  }
  std::vector<double> frequencies(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) frequencies[i] = static_cast<double>(counts[i]) / draws;
  return frequencies;
}

std::vector<double> softmax(const std::vector<float>& logits) {
  const double max_logit = *std::max_element(logits.begin(), logits.end());
  std::vector<double> probs(logits.size());
  double sum = 0.0;
  for (size_t i = 0; i < logits.size(); ++i) sum += probs[i] = std::exp(logits[i] - max_logit);
  for (double& p : probs) p /= sum;
  return probs;
}

double log_softmax(const std::vector<float>& logits, size_t id) {
  double sum = 0.0;
  for (float logit : logits) sum += std::exp(static_cast<double>(logit));
  return logits[id] - std::log(sum);
}

// Logits whose softmax is exactly `probs` (up to float rounding).
std::vector<float> logits_of(const std::vector<double>& probs) {
  std::vector<float> logits;
  for (double p : probs) logits.push_back(static_cast<float>(std::log(p)));
  return logits;
}

std::vector<int32_t> greedy_run(const sampling_params& params, std::vector<int32_t> prompt,
                                const std::vector<float>& logits, int steps) {
  sampler s(params, static_cast<int32_t>(logits.size()));
  s.set_prompt(prompt);
  std::vector<int32_t> tokens;
  for (int i = 0; i < steps; ++i) {
    std::vector<float> scratch = logits;
    tokens.push_back(s.sample(scratch.data()).token);
  }
  return tokens;
}

sampling_params greedy_params() {
  sampling_params params;
  params.temperature = 0.0f;
  return params;
}

sampling_params seeded(uint64_t seed) {
  sampling_params params;
  params.seed = seed;
  return params;
}

constexpr int num_draws = 20000;
// 20000 draws: the standard error of a frequency is at most 0.0035, so 0.015 is over 4 sigma.
constexpr double frequency_tolerance = 0.015;

}  // namespace

TEST_CASE("validate accepts the defaults and the boundary values") {
  sampling_params params;
  CHECK(std::string(inflight::validate(params)).empty());

  params.temperature = 0.0f;
  params.top_k = -1;
  params.top_p = 1.0f;
  params.min_p = 1.0f;
  params.repetition_penalty = 0.5f;
  params.presence_penalty = -2.0f;
  params.frequency_penalty = 2.0f;
  params.top_logprobs = 20;
  CHECK(std::string(inflight::validate(params)).empty());

  params.top_k = 0;
  params.top_p = 0.01f;
  params.min_p = 0.0f;
  params.presence_penalty = 2.0f;
  params.frequency_penalty = -2.0f;
  params.top_logprobs = 0;
  CHECK(std::string(inflight::validate(params)).empty());
}

TEST_CASE("validate rejects each bad field by name") {
  struct bad_case {
    const char* field;
    void (*spoil)(sampling_params&);
  };
  const bad_case cases[] = {
      {"temperature", [](sampling_params& p) { p.temperature = -0.1f; }},
      {"temperature", [](sampling_params& p) { p.temperature = nan_value; }},
      {"temperature", [](sampling_params& p) { p.temperature = std::numeric_limits<float>::infinity(); }},
      {"top_k", [](sampling_params& p) { p.top_k = -2; }},
      {"top_p", [](sampling_params& p) { p.top_p = 0.0f; }},
      {"top_p", [](sampling_params& p) { p.top_p = 1.01f; }},
      {"top_p", [](sampling_params& p) { p.top_p = nan_value; }},
      {"min_p", [](sampling_params& p) { p.min_p = -0.01f; }},
      {"min_p", [](sampling_params& p) { p.min_p = 1.01f; }},
      {"min_p", [](sampling_params& p) { p.min_p = nan_value; }},
      {"repetition_penalty", [](sampling_params& p) { p.repetition_penalty = 0.0f; }},
      {"repetition_penalty", [](sampling_params& p) { p.repetition_penalty = nan_value; }},
      {"presence_penalty", [](sampling_params& p) { p.presence_penalty = 2.01f; }},
      {"presence_penalty", [](sampling_params& p) { p.presence_penalty = -2.01f; }},
      {"presence_penalty", [](sampling_params& p) { p.presence_penalty = nan_value; }},
      {"frequency_penalty", [](sampling_params& p) { p.frequency_penalty = 2.01f; }},
      {"frequency_penalty", [](sampling_params& p) { p.frequency_penalty = -2.01f; }},
      {"frequency_penalty", [](sampling_params& p) { p.frequency_penalty = nan_value; }},
      {"top_logprobs", [](sampling_params& p) { p.top_logprobs = -1; }},
      {"top_logprobs", [](sampling_params& p) { p.top_logprobs = 21; }},
      {"logit_bias", [](sampling_params& p) { p.logit_bias = {{0, 100.5f}}; }},
      {"logit_bias", [](sampling_params& p) { p.logit_bias = {{0, nan_value}}; }},
      {"logit_bias", [](sampling_params& p) { p.logit_bias = {{-1, 1.0f}}; }},
      {"logit_bias", [](sampling_params& p) { p.logit_bias.assign(sampling_params::max_logit_bias + 1, {0, 1.0f}); }},
  };
  for (const bad_case& c : cases) {
    sampling_params params;
    c.spoil(params);
    const std::string message = inflight::validate(params);
    INFO("field " << c.field << ": message '" << message << "'");
    CHECK(message.find(c.field) != std::string::npos);
  }
}

TEST_CASE("greedy picks the argmax") {
  const std::vector<float> logits = {0.5f, -1.0f, 3.25f, 3.0f, -7.0f};
  CHECK(greedy_run(greedy_params(), {}, logits, 3) == std::vector<int32_t>{2, 2, 2});
}

TEST_CASE("greedy breaks ties toward the lowest id") {
  const std::vector<float> logits = {1.0f, 4.0f, 2.0f, 4.0f, 4.0f};
  CHECK(greedy_run(greedy_params(), {}, logits, 1) == std::vector<int32_t>{1});
}

TEST_CASE("repetition penalty on a prompt token changes the greedy choice") {
  sampling_params params = greedy_params();
  params.repetition_penalty = 1.2f;
  // Positive logit is divided: 2.0 / 1.2 = 1.667 < 1.8.
  CHECK(greedy_run(params, {0}, {2.0f, 1.8f, -1.0f}, 1) == std::vector<int32_t>{1});
  // Negative logit is multiplied: -1.0 * 1.2 = -1.2 < -1.1 (dividing would give -0.833 and keep 0).
  CHECK(greedy_run(params, {0}, {-1.0f, -1.1f}, 1) == std::vector<int32_t>{1});
  // Without the prompt token nothing is penalised.
  CHECK(greedy_run(params, {}, {2.0f, 1.8f, -1.0f}, 1) == std::vector<int32_t>{0});
}

TEST_CASE("repetition penalty applies once to a token in both prompt and output") {
  sampling_params params = greedy_params();
  params.repetition_penalty = 1.2f;
  // 2.0 / 1.2 = 1.667 > 1.5 every step; penalising twice would give 1.389 < 1.5 at step 2.
  CHECK(greedy_run(params, {0}, {2.0f, 1.5f}, 3) == std::vector<int32_t>{0, 0, 0});
  // A generated token is penalised even when not in the prompt: 2.0 -> 1.667 > 1.5 -> 0 again;
  // with penalty 1.5: 2.0 / 1.5 = 1.333 < 1.5 -> 1, then 1.5 / 1.5 = 1.0 < 1.333 -> 0.
  params.repetition_penalty = 1.5f;
  CHECK(greedy_run(params, {}, {2.0f, 1.5f}, 3) == std::vector<int32_t>{0, 1, 0});
}

TEST_CASE("presence penalty changes the greedy choice once per generated token") {
  sampling_params params = greedy_params();
  params.presence_penalty = 0.6f;
  // Step 1: 0 (1.0). Step 2: 0 -> 0.4 < 0.5 -> 1. Step 3: 1 -> -0.1, 0 is 0.4 -> 0.
  // Step 4: 0 was drawn twice but presence does not grow with the count: still 0.4 -> 0.
  CHECK(greedy_run(params, {}, {1.0f, 0.5f, 0.0f}, 4) == std::vector<int32_t>{0, 1, 0, 0});
  // The prompt does not count for presence.
  CHECK(greedy_run(params, {0}, {1.0f, 0.5f, 0.0f}, 1) == std::vector<int32_t>{0});
}

TEST_CASE("frequency penalty grows with the count") {
  sampling_params params = greedy_params();
  params.frequency_penalty = 0.2f;
  // Token 0 at 1.0 - 0.2 * count against token 1 at 0.7 - 0.2 * count:
  // 1.0 | 0.8 > 0.7 | 0.6 < 0.7 | 0.6 > 0.5 | 0.4 < 0.5.
  CHECK(greedy_run(params, {}, {1.0f, 0.7f, 0.0f}, 5) == std::vector<int32_t>{0, 0, 1, 0, 1});
}

TEST_CASE("penalties shape random draws too") {
  // Prompt token 0 at 2.0 is repeated-penalised to 1.0; token 1 at 0.0 is unchanged by the rule
  // (0 * 2 = 0) even once drawn. So the draws follow softmax(1, 0) = 0.731, not softmax(2, 0) = 0.881.
  sampling_params params = seeded(14);
  params.repetition_penalty = 2.0f;
  sampler s(params, 2);
  const std::vector<int32_t> prompt = {0};
  s.set_prompt(prompt);
  int zeros = 0;
  for (int i = 0; i < num_draws; ++i) {
    std::vector<float> logits = {2.0f, 0.0f};
    if (s.sample(logits.data()).token == 0) ++zeros;
  }
  CHECK(std::abs(static_cast<double>(zeros) / num_draws - 1.0 / (1.0 + std::exp(-1.0))) < frequency_tolerance);
}

TEST_CASE("the same seed gives the same draws and different seeds differ") {
  std::mt19937 gen(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> logits(100);
  for (float& logit : logits) logit = normal(gen);

  auto run = [&](uint64_t seed) {
    sampling_params params = seeded(seed);
    params.top_p = 0.95f;
    sampler s(params, static_cast<int32_t>(logits.size()));
    std::vector<int32_t> tokens;
    for (int i = 0; i < 200; ++i) {
      std::vector<float> scratch = logits;
      tokens.push_back(s.sample(scratch.data()).token);
    }
    return tokens;
  };
  const std::vector<int32_t> first = run(42);
  CHECK(first == run(42));
  CHECK(first != run(43));
  // The draws are not degenerate: a near-flat distribution over 100 ids spreads 200 draws widely.
  std::vector<int32_t> distinct = first;
  std::sort(distinct.begin(), distinct.end());
  CHECK(std::unique(distinct.begin(), distinct.end()) - distinct.begin() > 30);
}

TEST_CASE("temperature 1 draws follow the softmax") {
  const std::vector<float> logits = {1.0f, 2.0f, 0.5f, -1.0f, 1.5f};
  const std::vector<double> expected = softmax(logits);
  const std::vector<double> frequencies = draw_frequencies(seeded(1), logits, num_draws);
  for (size_t i = 0; i < logits.size(); ++i) {
    INFO("token " << i);
    CHECK(std::abs(frequencies[i] - expected[i]) < frequency_tolerance);
  }
}

TEST_CASE("temperature 2 flattens and a small temperature makes the argmax dominate") {
  const std::vector<float> logits = {1.0f, 1.2f, 0.8f};
  sampling_params params = seeded(2);

  params.temperature = 2.0f;
  std::vector<float> halved;
  for (float logit : logits) halved.push_back(logit / 2.0f);
  const std::vector<double> expected = softmax(halved);
  std::vector<double> frequencies = draw_frequencies(params, logits, num_draws);
  for (size_t i = 0; i < logits.size(); ++i) CHECK(std::abs(frequencies[i] - expected[i]) < frequency_tolerance);

  // T = 0.05: the runner-up weighs exp(-0.2 / 0.05) = 0.018 of the argmax.
  params.temperature = 0.05f;
  frequencies = draw_frequencies(params, logits, num_draws);
  CHECK(frequencies[1] > 0.96);
  // T = 0.01: exp(-20); no other token in 20000 draws.
  params.temperature = 0.01f;
  frequencies = draw_frequencies(params, logits, num_draws);
  CHECK(frequencies[1] == 1.0);
}

TEST_CASE("top-k keeps only the k most likely") {
  const std::vector<float> logits = {1.0f, 2.0f, 0.5f, 1.8f, 1.5f};
  sampling_params params = seeded(3);
  params.top_k = 2;
  const std::vector<double> frequencies = draw_frequencies(params, logits, num_draws);
  CHECK(frequencies[0] == 0.0);
  CHECK(frequencies[2] == 0.0);
  CHECK(frequencies[4] == 0.0);
  // Renormalised over {1, 3}: 1 / (1 + e^-0.2) = 0.5498.
  const double expected_1 = 1.0 / (1.0 + std::exp(-0.2));
  CHECK(std::abs(frequencies[1] - expected_1) < frequency_tolerance);
  CHECK(std::abs(frequencies[3] - (1.0 - expected_1)) < frequency_tolerance);

  // Ties at the cut go to the lowest ids: of the three 2.0s only id 5 joins id 1 (logits past the
  // first four so that the block-skipping path decides).
  const std::vector<float> tied = {0.0f, 3.0f, 0.0f, 0.0f, 0.0f, 2.0f, 0.0f, 2.0f, 2.0f, 0.0f};
  const std::vector<double> tied_frequencies = draw_frequencies(params, tied, num_draws);
  CHECK(tied_frequencies[7] == 0.0);
  CHECK(tied_frequencies[8] == 0.0);
  CHECK(tied_frequencies[5] > 0.2);

  // top_k = -1 and top_k >= vocab disable it.
  for (int32_t top_k : {-1, 5, 100}) {
    params.top_k = top_k;
    const std::vector<double> all = draw_frequencies(params, logits, num_draws);
    const std::vector<double> expected = softmax(logits);
    for (size_t i = 0; i < logits.size(); ++i) CHECK(std::abs(all[i] - expected[i]) < frequency_tolerance);
  }
}

TEST_CASE("top-p keeps exactly the expected nucleus") {
  // Sorted: 1 (0.4), 2 (0.25), 3 (0.2), 4 (0.1), 0 (0.05).
  const std::vector<float> logits = logits_of({0.05, 0.4, 0.25, 0.2, 0.1});
  sampling_params params = seeded(4);

  // 0.4 < 0.6 <= 0.65: keep {1, 2}.
  params.top_p = 0.6f;
  std::vector<double> frequencies = draw_frequencies(params, logits, num_draws);
  CHECK(frequencies[0] == 0.0);
  CHECK(frequencies[3] == 0.0);
  CHECK(frequencies[4] == 0.0);
  CHECK(std::abs(frequencies[1] - 0.4 / 0.65) < frequency_tolerance);
  CHECK(std::abs(frequencies[2] - 0.25 / 0.65) < frequency_tolerance);

  // 0.65 < 0.7 <= 0.85: keep {1, 2, 3}.
  params.top_p = 0.7f;
  frequencies = draw_frequencies(params, logits, num_draws);
  CHECK(frequencies[0] == 0.0);
  CHECK(frequencies[4] == 0.0);
  CHECK(std::abs(frequencies[1] - 0.4 / 0.85) < frequency_tolerance);
  CHECK(std::abs(frequencies[2] - 0.25 / 0.85) < frequency_tolerance);
  CHECK(std::abs(frequencies[3] - 0.2 / 0.85) < frequency_tolerance);

  // Less than the top token's own mass: the top token alone is kept.
  params.top_p = 0.3f;
  frequencies = draw_frequencies(params, logits, num_draws);
  CHECK(frequencies[1] == 1.0);
}

TEST_CASE("top-p over a wide flat distribution keeps the lowest ids of the tie") {
  // 1000 equal logits and top_p = 0.5: the nucleus is 500 tokens, more than one sorting window, and
  // ties go to the lowest ids, so exactly ids 0..499 may appear.
  const std::vector<float> logits(1000, 0.25f);
  sampling_params params = seeded(5);
  params.top_p = 0.5f;
  const std::vector<double> frequencies = draw_frequencies(params, logits, num_draws);
  int distinct = 0;
  for (size_t i = 0; i < logits.size(); ++i) {
    if (i >= 500) CHECK(frequencies[i] == 0.0);
    if (frequencies[i] > 0.0) ++distinct;
  }
  CHECK(distinct > 480);  // 20000 draws over 500 ids: each is missed with probability e^-40
}

TEST_CASE("top-p over a large ladder of logits keeps exactly the sorted nucleus") {
  // 2000 tokens at scattered ids with logits 0, -0.003, -0.006, ... spread over many weight buckets
  // (and several per bucket), the rest far below. Every nucleus token has probability near 1e-3,
  // so 20000 draws hit each one and would hit one past the boundary about as often.
  constexpr int32_t vocab = 8192;
  std::vector<float> logits(vocab, -60.0f);
  std::vector<int32_t> ids(vocab);
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), std::mt19937(21));
  for (int32_t r = 0; r < 2000; ++r) logits[static_cast<size_t>(ids[r])] = -0.003f * static_cast<float>(r);

  for (float temperature : {1.0f, 0.5f}) {
    INFO("temperature " << temperature);
    sampling_params params = seeded(22);
    params.temperature = temperature;
    params.top_p = 0.5f;
    // The expected nucleus, in double over a full sort.
    std::vector<double> weights(vocab);
    double total = 0.0;
    for (int32_t i = 0; i < vocab; ++i) total += weights[i] = std::exp(logits[i] / temperature);
    std::vector<int32_t> order(vocab);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return weights[a] > weights[b]; });
    std::vector<bool> in_nucleus(vocab, false);
    double cumulative = 0.0;
    int32_t nucleus_size = 0;
    while (cumulative < 0.5 * total) {
      cumulative += weights[static_cast<size_t>(order[nucleus_size])];
      in_nucleus[static_cast<size_t>(order[nucleus_size++])] = true;
    }
    // Well posed: the boundary is not within rounding of the target.
    REQUIRE(cumulative - 0.5 * total > 1e-4 * total);
    REQUIRE(0.5 * total - (cumulative - weights[static_cast<size_t>(order[nucleus_size - 1])]) > 1e-4 * total);

    const std::vector<double> frequencies = draw_frequencies(params, logits, num_draws);
    int32_t outside = 0;
    int32_t missed = 0;
    for (int32_t i = 0; i < vocab; ++i) {
      if (!in_nucleus[i] && frequencies[i] > 0.0) ++outside;
      if (in_nucleus[i] && frequencies[i] == 0.0) ++missed;
    }
    CHECK(nucleus_size > 100);
    CHECK(outside == 0);
    CHECK(missed == 0);
  }
}

TEST_CASE("top-k and top-p combine") {
  // Probabilities, most likely first: 1 (0.4), 3 (0.2), 5 (0.17), 4 (0.1), 2 (0.08), 0 (0.05).
  const std::vector<float> logits = logits_of({0.05, 0.4, 0.08, 0.2, 0.1, 0.17});
  sampling_params params = seeded(23);
  params.top_k = 4;  // {1, 3, 5, 4}: 0.87 of the mass; 0.8 of it is 0.696 -> {1, 3, 5}
  params.top_p = 0.8f;
  std::vector<double> frequencies = draw_frequencies(params, logits, num_draws);
  CHECK(frequencies[0] == 0.0);
  CHECK(frequencies[2] == 0.0);
  CHECK(frequencies[4] == 0.0);
  CHECK(std::abs(frequencies[1] - 0.4 / 0.77) < frequency_tolerance);
  CHECK(std::abs(frequencies[3] - 0.2 / 0.77) < frequency_tolerance);
  CHECK(std::abs(frequencies[5] - 0.17 / 0.77) < frequency_tolerance);

  // With min-p on top: threshold 0.45 * 0.4 = 0.18 also drops token 5.
  params.min_p = 0.45f;
  frequencies = draw_frequencies(params, logits, num_draws);
  CHECK(frequencies[5] == 0.0);
  CHECK(std::abs(frequencies[1] - 0.4 / 0.6) < frequency_tolerance);
}

TEST_CASE("min-p drops tokens below min_p times the top probability") {
  const std::vector<float> logits = logits_of({0.5, 0.2, 0.15, 0.1, 0.05});
  sampling_params params = seeded(6);
  // Threshold 0.25 * 0.5 = 0.125: keep {0, 1, 2}, renormalised over 0.85.
  params.min_p = 0.25f;
  const std::vector<double> frequencies = draw_frequencies(params, logits, num_draws);
  CHECK(frequencies[3] == 0.0);
  CHECK(frequencies[4] == 0.0);
  CHECK(std::abs(frequencies[0] - 0.5 / 0.85) < frequency_tolerance);
  CHECK(std::abs(frequencies[1] - 0.2 / 0.85) < frequency_tolerance);
  CHECK(std::abs(frequencies[2] - 0.15 / 0.85) < frequency_tolerance);
}

TEST_CASE("min-p is relative to the temperature-scaled distribution") {
  // T = 0.5 squares the probability ratios: 0.2 / 0.5 = 0.4 becomes 0.16 < 0.25 and is dropped.
  const std::vector<float> logits = logits_of({0.5, 0.2, 0.3});
  sampling_params params = seeded(7);
  params.temperature = 0.5f;
  params.min_p = 0.25f;
  const std::vector<double> frequencies = draw_frequencies(params, logits, num_draws);
  CHECK(frequencies[1] == 0.0);
  // Kept: 0.25 and 0.09 (squared), renormalised.
  CHECK(std::abs(frequencies[0] - 0.25 / 0.34) < frequency_tolerance);
}

TEST_CASE("the chosen logprob is the raw log_softmax") {
  const std::vector<float> logits = {1.0f, 2.0f, 3.0f};
  sampler greedy(greedy_params(), 3);
  std::vector<float> scratch = logits;
  const inflight::sample_result result = greedy.sample(scratch.data());
  CHECK(result.token == 2);
  CHECK(result.logprob ==
        doctest::Approx(3.0 - std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0))).epsilon(1e-6));
  CHECK(result.num_top == 0);

  // Neither temperature nor penalties change what is reported.
  sampling_params params = seeded(8);
  params.temperature = 0.5f;
  params.repetition_penalty = 1.3f;
  params.presence_penalty = 0.5f;
  params.frequency_penalty = 0.5f;
  sampler random(params, 3);
  const std::vector<int32_t> prompt = {0, 2};
  random.set_prompt(prompt);
  for (int i = 0; i < 50; ++i) {
    scratch = logits;
    const inflight::sample_result drawn = random.sample(scratch.data());
    REQUIRE(drawn.token >= 0);
    REQUIRE(drawn.token < 3);
    CHECK(drawn.logprob == doctest::Approx(log_softmax(logits, static_cast<size_t>(drawn.token))));
  }
}

TEST_CASE("a penalised chosen token still reports its raw logprob") {
  // Token 0 is penalised to 1.667 and still chosen; its logprob is that of the raw 2.0.
  sampling_params params = greedy_params();
  params.repetition_penalty = 1.2f;
  params.frequency_penalty = 0.1f;
  sampler s(params, 2);
  const std::vector<int32_t> prompt = {0};
  s.set_prompt(prompt);
  const std::vector<float> logits = {2.0f, 1.5f};
  for (int i = 0; i < 2; ++i) {
    std::vector<float> scratch = logits;
    const inflight::sample_result result = s.sample(scratch.data());
    CHECK(result.token == 0);
    CHECK(result.logprob == doctest::Approx(log_softmax(logits, 0)));
  }
}

TEST_CASE("logit bias moves the greedy choice, before the penalties, and the logprob stays raw") {
  const std::vector<float> logits = {2.0f, 1.5f, -3.0f};
  sampling_params params = greedy_params();
  params.logit_bias = {{0, -100.0f}};
  CHECK(greedy_run(params, {}, logits, 2) == std::vector<int32_t>{1, 1});  // banned
  params.logit_bias = {{2, 100.0f}};
  CHECK(greedy_run(params, {}, logits, 2) == std::vector<int32_t>{2, 2});  // forced
  params.logit_bias = {{1, 0.4f}};  // 1.9 < 2.0: not enough
  CHECK(greedy_run(params, {}, logits, 1) == std::vector<int32_t>{0});
  params.logit_bias = {{1, 0.6f}};  // 2.1 > 2.0
  CHECK(greedy_run(params, {}, logits, 1) == std::vector<int32_t>{1});
  // The bias comes first and the repetition penalty then divides the biased logit: (1.5 + 1.5) / 2 = 1.5 < 2.0.
  params.logit_bias = {{1, 1.5f}};
  params.repetition_penalty = 2.0f;
  CHECK(greedy_run(params, {1}, logits, 1) == std::vector<int32_t>{0});
  // Ids beyond the vocabulary are dropped (the request layer refuses them first).
  params = greedy_params();
  params.logit_bias = {{7, 100.0f}, {2, 100.0f}};
  CHECK(greedy_run(params, {}, logits, 1) == std::vector<int32_t>{2});

  // Sampled: a banned token is never drawn; the reported logprob is the raw distribution's.
  sampling_params sampled;
  sampled.seed = 3;
  sampled.logit_bias = {{0, -100.0f}};
  sampler s(sampled, 3);
  for (int i = 0; i < 200; ++i) {
    std::vector<float> scratch = logits;
    const inflight::sample_result result = s.sample(scratch.data());
    REQUIRE(result.token != 0);
    CHECK(result.logprob == doctest::Approx(log_softmax(logits, result.token)));
  }
}

TEST_CASE("top logprobs are the most likely raw tokens sorted") {
  std::mt19937 gen(11);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  std::vector<float> logits(50);
  for (float& logit : logits) logit = normal(gen);
  logits[17] = logits[30] = 9.0f;  // a tie at the top: lower id first

  sampling_params params = seeded(9);
  params.top_logprobs = 5;
  params.repetition_penalty = 2.0f;  // must not affect the reported list
  sampler s(params, static_cast<int32_t>(logits.size()));
  const std::vector<int32_t> prompt = {17, 30};
  s.set_prompt(prompt);
  std::vector<float> scratch = logits;
  const inflight::sample_result result = s.sample(scratch.data());

  std::vector<int32_t> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  REQUIRE(result.num_top == 5);
  for (int i = 0; i < 5; ++i) {
    INFO("rank " << i);
    CHECK(result.top[i].token == order[i]);
    CHECK(result.top[i].logprob == doctest::Approx(log_softmax(logits, static_cast<size_t>(order[i]))));
    if (i > 0) CHECK(result.top[i - 1].logprob >= result.top[i].logprob);
  }
  CHECK(result.top[0].token == 17);
  CHECK(result.top[1].token == 30);

  // A tie at the cut of the list: the lowest ids win.
  params.repetition_penalty = 1.0f;
  params.top_logprobs = 3;
  sampler flat(params, 40);
  std::vector<float> equal(40, 0.5f);
  const inflight::sample_result flat_result = flat.sample(equal.data());
  REQUIRE(flat_result.num_top == 3);
  for (int i = 0; i < 3; ++i) {
    CHECK(flat_result.top[i].token == i);
    CHECK(flat_result.top[i].logprob == doctest::Approx(-std::log(40.0)).epsilon(1e-6));
  }
}

TEST_CASE("the full reported distribution sums to one") {
  // vocab == max_top_logprobs: the top list is the whole distribution.
  std::vector<float> logits(inflight::max_top_logprobs);
  for (size_t i = 0; i < logits.size(); ++i) logits[i] = 40.0f + 0.7f * static_cast<float>(i % 7);
  sampling_params params = seeded(10);
  params.top_logprobs = inflight::max_top_logprobs;
  sampler s(params, static_cast<int32_t>(logits.size()));
  std::vector<float> scratch = logits;
  const inflight::sample_result result = s.sample(scratch.data());
  REQUIRE(result.num_top == inflight::max_top_logprobs);
  double total = 0.0;
  for (int i = 0; i < result.num_top; ++i) total += std::exp(static_cast<double>(result.top[i].logprob));
  CHECK(total == doctest::Approx(1.0).epsilon(1e-5));

  // top_logprobs larger than the vocabulary reports the whole vocabulary.
  params.top_logprobs = 20;
  sampler small(params, 3);
  std::vector<float> three = {0.0f, 1.0f, 2.0f};
  CHECK(small.sample(three.data()).num_top == 3);
}

TEST_CASE("a 49152-token vocabulary samples under every filter") {
  constexpr int32_t vocab = 49152;
  std::mt19937 gen(12);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<float> logits(vocab);
  for (float& logit : logits) logit = normal(gen);
  std::vector<int32_t> order(vocab);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });

  struct filter_case {
    float temperature;
    int32_t top_k;
    float top_p;
    float min_p;
  };
  const filter_case cases[] = {
      {0.0f, 0, 1.0f, 0.0f}, {1.0f, 0, 1.0f, 0.0f}, {0.8f, 50, 1.0f, 0.0f},
      {1.0f, 0, 0.9f, 0.0f}, {0.7f, 0, 1.0f, 0.05f}, {0.7f, 40, 0.95f, 0.02f},
  };
  for (const filter_case& c : cases) {
    sampling_params params = seeded(13);
    params.temperature = c.temperature;
    params.top_k = c.top_k;
    params.top_p = c.top_p;
    params.min_p = c.min_p;
    params.top_logprobs = 20;
    params.repetition_penalty = 1.1f;
    sampler s(params, vocab);
    std::vector<float> scratch;
    for (int step = 0; step < 20; ++step) {
      scratch = logits;
      const inflight::sample_result result = s.sample(scratch.data());
      REQUIRE(result.token >= 0);
      REQUIRE(result.token < vocab);
      CHECK(std::isfinite(result.logprob));
      CHECK(result.logprob <= 0.0f);
      CHECK(result.logprob == doctest::Approx(log_softmax(logits, static_cast<size_t>(result.token))).epsilon(1e-5));
      if (c.top_k > 0) {
        // Top-k applies after the penalties: rank the chosen token among the penalised logits,
        // which sample() leaves in `scratch`.
        const float chosen = scratch[static_cast<size_t>(result.token)];
        CHECK(std::count_if(scratch.begin(), scratch.end(), [&](float l) { return l > chosen; }) < c.top_k);
      }
      REQUIRE(result.num_top == 20);
      for (int i = 0; i < 20; ++i) CHECK(result.top[i].token == order[i]);
    }
    if (c.temperature == 0.0f) CHECK(s.params().is_greedy());
  }
}
