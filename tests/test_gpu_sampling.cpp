// On-device sampling (gpu/sampling_kernels.cu) against host references: greedy against an argmax
// (ties: lowest id), reported log-probabilities against a double log-softmax, penalties against the CPU
// sampler (inflight::sampler) step by step, and the filtered distributions by counting draws.
//
// Tolerances: log-probabilities 1e-4 absolute (the device sums exp in fp32 per thread and a fixed tree:
// about 1e-6 relative on a 128k vocabulary). Frequencies over 100,000 draws: the standard error of one
// is at most 0.0016, so 0.01 is over 6 sigma; a filtered-out token must never appear.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iterator>
#include <limits>
#include <memory>
#include <numeric>
#include <random>
#include <stdexcept>
#include <vector>

#include "gpu_test_support.hpp"
#include "inflight/sampling.hpp"
#include "sampling_kernels.hpp"

using inflight::gpu::device_penalty_lists;
using inflight::gpu::device_sample_outputs;
using inflight::gpu::device_sampling_params;
using inflight::gpu::launch_sample;
using inflight::gpu::testing::device_buffer;

namespace {

constexpr int32_t max_top = inflight::gpu::sampling_max_top_logprobs;
constexpr float inf = std::numeric_limits<float>::infinity();
constexpr float nan_value = std::numeric_limits<float>::quiet_NaN();
constexpr double logprob_tolerance = 1e-4;
constexpr double frequency_tolerance = 0.01;

struct row_penalties {
  std::vector<int32_t> tokens;  // unique
  std::vector<int32_t> counts;  // times generated; 0 = prompt only
};

struct launch_result {
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;
  std::vector<int32_t> num_top;
  std::vector<int32_t> top_tokens;  // [rows][20]
  std::vector<float> top_logprobs;  // [rows][20]
};

// The device side of one batch: logits, params, penalty lists and outputs.
class sampling_batch {
 public:
  // `misalign` shifts the logits by one float, so that a vocabulary that is a multiple of 4 still takes the
  // scalar path.
  sampling_batch(const std::vector<float>& logits, int32_t vocab, const std::vector<device_sampling_params>& params,
                 bool misalign = false)
      : rows_(static_cast<int32_t>(params.size())),
        vocab_(vocab),
        offset_(misalign ? 1 : 0),
        logits_(logits.size() + offset_),
        params_(params),
        tokens_(params.size()),
        logprobs_(params.size()),
        num_top_(params.size()),
        top_tokens_(params.size() * max_top),
        top_logprobs_(params.size() * max_top) {
    REQUIRE(logits.size() == static_cast<size_t>(rows_) * static_cast<size_t>(vocab));
    std::vector<float> padded(offset_, 0.0f);
    padded.insert(padded.end(), logits.begin(), logits.end());
    logits_.upload(padded);
  }

  void set_penalties(const std::vector<row_penalties>& rows) {
    REQUIRE(rows.size() == static_cast<size_t>(rows_));
    std::vector<int32_t> offsets{0};
    std::vector<int32_t> tokens;
    std::vector<int32_t> counts;
    for (const row_penalties& row : rows) {
      tokens.insert(tokens.end(), row.tokens.begin(), row.tokens.end());
      counts.insert(counts.end(), row.counts.begin(), row.counts.end());
      offsets.push_back(static_cast<int32_t>(tokens.size()));
    }
    REQUIRE(tokens.size() == counts.size());
    penalty_offsets_ = std::make_unique<device_buffer<int32_t>>(offsets);
    penalty_tokens_ = std::make_unique<device_buffer<int32_t>>(tokens);
    penalty_counts_ = std::make_unique<device_buffer<int32_t>>(counts);
    saved_logits_ = std::make_unique<device_buffer<float>>(tokens.size());
  }

  void set_params(const std::vector<device_sampling_params>& params) { params_.upload(params); }
  std::vector<device_sampling_params> params() const { return params_.download(); }

  void launch(cudaStream_t stream = nullptr) {
    device_penalty_lists penalties;
    if (penalty_offsets_) {
      penalties.offsets = penalty_offsets_->get();
      penalties.tokens = penalty_tokens_->get();
      penalties.generated_counts = penalty_counts_->get();
      penalties.saved_logits = saved_logits_->get();
    }
    launch_sample(logits_.get() + offset_, rows_, vocab_, params_.get(), penalties, outputs(), stream);
  }

  device_sample_outputs outputs() const {
    device_sample_outputs out;
    out.tokens = tokens_.get();
    out.logprobs = logprobs_.get();
    out.num_top = num_top_.get();
    out.top_tokens = top_tokens_.get();
    out.top_logprobs = top_logprobs_.get();
    return out;
  }

  launch_result result() const {
    return {tokens_.download(), logprobs_.download(), num_top_.download(), top_tokens_.download(),
            top_logprobs_.download()};
  }

  std::vector<float> logits() const {
    std::vector<float> all = logits_.download();
    return std::vector<float>(all.begin() + offset_, all.end());
  }

 private:
  int32_t rows_;
  int32_t vocab_;
  size_t offset_;
  device_buffer<float> logits_;
  device_buffer<device_sampling_params> params_;
  std::unique_ptr<device_buffer<int32_t>> penalty_offsets_;
  std::unique_ptr<device_buffer<int32_t>> penalty_tokens_;
  std::unique_ptr<device_buffer<int32_t>> penalty_counts_;
  std::unique_ptr<device_buffer<float>> saved_logits_;
  device_buffer<int32_t> tokens_;
  device_buffer<float> logprobs_;
  device_buffer<int32_t> num_top_;
  device_buffer<int32_t> top_tokens_;
  device_buffer<float> top_logprobs_;
};

device_sampling_params greedy_params(int32_t num_top = 0) {
  device_sampling_params params;
  params.temperature = 0.0f;
  params.num_top_logprobs = num_top;
  return params;
}

device_sampling_params random_params(float temperature, int32_t top_k, float top_p, float min_p, uint64_t seed) {
  device_sampling_params params;
  params.temperature = temperature;
  params.top_k = top_k;
  params.top_p = top_p;
  params.min_p = min_p;
  params.seed = seed;
  return params;
}

// --- Host references -------------------------------------------------------------------------------

// Non-NaN ids, most likely first, lowest id first on ties.
std::vector<int32_t> ranked_ids(const float* row, int32_t vocab) {
  std::vector<int32_t> ids;
  for (int32_t i = 0; i < vocab; ++i) {
    if (!std::isnan(row[i])) ids.push_back(i);
  }
  std::stable_sort(ids.begin(), ids.end(), [&](int32_t a, int32_t b) { return row[a] > row[b]; });
  return ids;
}

int32_t host_argmax(const float* row, int32_t vocab) {
  const std::vector<int32_t> ids = ranked_ids(row, vocab);
  return ids.empty() ? 0 : ids[0];
}

double host_log_sum_exp(const float* row, int32_t vocab) {
  double max_logit = -std::numeric_limits<double>::infinity();
  for (int32_t i = 0; i < vocab; ++i) {
    if (!std::isnan(row[i])) max_logit = std::max(max_logit, static_cast<double>(row[i]));
  }
  double sum = 0.0;
  for (int32_t i = 0; i < vocab; ++i) {
    if (!std::isnan(row[i])) sum += std::exp(static_cast<double>(row[i]) - max_logit);
  }
  return max_logit + std::log(sum);
}

// The distribution a draw must follow: softmax(logits / T) over the top-k, then the shortest prefix
// holding top_p of that mass, then the tokens with weight >= min_p times the top one's. REQUIREs that no
// boundary is within rounding of its threshold, so that the device (fp32, fixed point) must agree.
std::vector<double> filtered_probabilities(const float* row, int32_t vocab, float temperature, int32_t top_k,
                                           float top_p, float min_p) {
  const std::vector<int32_t> order = ranked_ids(row, vocab);
  const double max_logit = row[order[0]];
  std::vector<double> weight(order.size());
  for (size_t r = 0; r < order.size(); ++r) weight[r] = std::exp((row[order[r]] - max_logit) / temperature);
  size_t kept = order.size();
  if (top_k > 0 && top_k < vocab) kept = std::min(kept, static_cast<size_t>(top_k));
  if (top_p < 1.0f) {
    double mass = 0.0;
    for (size_t r = 0; r < kept; ++r) mass += weight[r];
    const double target = static_cast<double>(top_p) * mass;
    double cumulative = 0.0;
    size_t length = 0;
    while (length < kept && cumulative < target) cumulative += weight[length++];
    REQUIRE(cumulative - target > 1e-4 * mass);
    REQUIRE(target - (cumulative - weight[length - 1]) > 1e-4 * mass);
    kept = length;
  }
  std::vector<double> probabilities(static_cast<size_t>(vocab), 0.0);
  double total = 0.0;
  for (size_t r = 0; r < kept; ++r) {
    if (min_p > 0.0f) {
      REQUIRE(std::abs(weight[r] - min_p) > 1e-4);
      if (weight[r] < min_p) continue;
    }
    probabilities[static_cast<size_t>(order[r])] = weight[r];
    total += weight[r];
  }
  for (double& p : probabilities) p /= total;
  return probabilities;
}

// Bitwise, so that NaN equals NaN.
bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

std::vector<float> logits_of(const std::vector<double>& probabilities) {
  std::vector<float> logits;
  for (double p : probabilities) logits.push_back(static_cast<float>(std::log(p)));
  return logits;
}

std::vector<float> normal_logits(size_t count, float stddev, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> normal(0.0f, stddev);
  std::vector<float> logits(count);
  for (float& logit : logits) logit = normal(gen);
  return logits;
}

// Draws rows * launches tokens from `row_logits` with `params` (row r seeded seed + r) and returns each
// id's frequency. Also checks that the kernel advanced every row's step counter once per launch.
std::vector<double> draw_frequencies(const std::vector<float>& row_logits, device_sampling_params params,
                                     int32_t rows = 1000, int launches = 100) {
  const auto vocab = static_cast<int32_t>(row_logits.size());
  std::vector<float> logits;
  for (int32_t r = 0; r < rows; ++r) logits.insert(logits.end(), row_logits.begin(), row_logits.end());
  std::vector<device_sampling_params> all(static_cast<size_t>(rows), params);
  for (int32_t r = 0; r < rows; ++r) all[static_cast<size_t>(r)].seed = params.seed + static_cast<uint64_t>(r);
  sampling_batch batch(logits, vocab, all);
  std::vector<double> counts(static_cast<size_t>(vocab), 0.0);
  for (int launch = 0; launch < launches; ++launch) {
    batch.launch();
    for (int32_t token : batch.result().tokens) {
      REQUIRE(token >= 0);
      REQUIRE(token < vocab);
      counts[static_cast<size_t>(token)] += 1.0;
    }
  }
  for (const device_sampling_params& after : batch.params()) CHECK(after.rng_step == params.rng_step + launches);
  for (double& count : counts) count /= static_cast<double>(rows) * launches;
  return counts;
}

void check_frequencies(const std::vector<double>& frequencies, const std::vector<double>& expected) {
  REQUIRE(frequencies.size() == expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    INFO("token " << i << ": drawn " << frequencies[i] << ", expected " << expected[i]);
    if (expected[i] == 0.0) {
      CHECK(frequencies[i] == 0.0);
    } else {
      CHECK(std::abs(frequencies[i] - expected[i]) < frequency_tolerance);
    }
  }
}

// Greedy tokens, chosen logprobs and top-N lists of every row against the host references.
void check_greedy_rows(const std::vector<float>& logits, int32_t vocab, int32_t num_top, bool misalign) {
  const auto rows = static_cast<int32_t>(logits.size() / static_cast<size_t>(vocab));
  sampling_batch batch(logits, vocab, std::vector<device_sampling_params>(static_cast<size_t>(rows), greedy_params(num_top)),
                       misalign);
  batch.launch();
  const launch_result result = batch.result();
  for (int32_t r = 0; r < rows; ++r) {
    INFO("vocab " << vocab << ", row " << r);
    const float* row = logits.data() + static_cast<size_t>(r) * static_cast<size_t>(vocab);
    const std::vector<int32_t> order = ranked_ids(row, vocab);
    const double log_sum_exp = host_log_sum_exp(row, vocab);
    const int32_t token = result.tokens[static_cast<size_t>(r)];
    REQUIRE(token >= 0);
    REQUIRE(token < vocab);
    CHECK(token == host_argmax(row, vocab));
    CHECK(std::abs(result.logprobs[static_cast<size_t>(r)] - (row[token] - log_sum_exp)) < logprob_tolerance);
    const auto expected_top = static_cast<int32_t>(std::min<size_t>(static_cast<size_t>(num_top), order.size()));
    REQUIRE(result.num_top[static_cast<size_t>(r)] == expected_top);
    for (int32_t i = 0; i < max_top; ++i) {
      const size_t at = static_cast<size_t>(r) * max_top + static_cast<size_t>(i);
      if (i < expected_top) {
        CHECK(result.top_tokens[at] == order[static_cast<size_t>(i)]);
        CHECK(std::abs(result.top_logprobs[at] - (row[order[static_cast<size_t>(i)]] - log_sum_exp)) < logprob_tolerance);
      } else {
        CHECK(result.top_tokens[at] == -1);
      }
    }
  }
  CHECK(same_bits(batch.logits(), logits));  // nothing penalised, nothing written
}

}  // namespace

TEST_CASE("greedy picks the argmax with the lowest id on ties and reports raw logprobs") {
  INFLIGHT_REQUIRE_CUDA_DEVICE();
  for (int32_t vocab : {49152, 128256}) {
    constexpr int32_t rows = 6;
    std::vector<float> logits = normal_logits(static_cast<size_t>(rows) * static_cast<size_t>(vocab), 3.0f, 1);
    auto row = [&](int32_t r) { return logits.data() + static_cast<size_t>(r) * static_cast<size_t>(vocab); };
    // Row 1: a three-way tie at the top (not in id order of writing). Row 2: all equal.
    for (int32_t id : {40000, 7, 4099}) row(1)[id] = 30.0f;
    std::fill(row(2), row(2) + vocab, 0.5f);
    // Row 3: NaN above everything and -inf scattered. Row 4: the maximum at the last id.
    for (int32_t id : {0, 5, 77, vocab - 2}) row(3)[id] = nan_value;
    for (int32_t id = 1; id < vocab; id += 97) row(3)[id] = -inf;
    row(4)[vocab - 1] = 25.0f;
    // Row 5: ties inside the top 20 (pairs of equal logits).
    for (int32_t i = 0; i < 12; ++i) row(5)[1000 * i + 3] = 20.0f - static_cast<float>(i / 2);
    check_greedy_rows(logits, vocab, max_top, false);
  }
}

TEST_CASE("odd vocabularies and unaligned logits take the scalar path") {
  INFLIGHT_REQUIRE_CUDA_DEVICE();
  for (int32_t vocab : {1, 3, 5, 19, 20, 21, 1001, 4099, 8195}) {
    std::vector<float> logits = normal_logits(static_cast<size_t>(vocab) * 3, 2.0f, static_cast<uint32_t>(vocab));
    logits[static_cast<size_t>(vocab) * 2 + static_cast<size_t>(vocab) / 2] = 50.0f;  // row 2's argmax mid-row
    check_greedy_rows(logits, vocab, max_top, false);
    check_greedy_rows(logits, vocab, 3, false);
  }
  // A multiple of 4, but the rows start off a 16-byte boundary.
  check_greedy_rows(normal_logits(49152 * 2, 3.0f, 9), 49152, max_top, true);
}

TEST_CASE("each penalty matches the CPU sampler under greedy, step by step") {
  INFLIGHT_REQUIRE_CUDA_DEVICE();
  constexpr int32_t vocab = 4096;
  constexpr int steps = 12;
  // A few clear favourites, so that the penalties move the argmax between them. Every case runs twice:
  // on these logits and on them shifted to all negative, where repetition multiplies instead of divides.
  std::vector<float> base = normal_logits(vocab, 1.0f, 2);
  const float favourites[] = {6.0f, 5.8f, 5.5f, -0.5f, 5.2f};
  for (int32_t i = 0; i < 5; ++i) base[static_cast<size_t>(100 * i + 11)] = favourites[i];
  base[2000] = -7.0f;
  std::vector<float> shifted = base;
  for (float& logit : shifted) logit -= 10.0f;

  struct penalty_case {
    float repetition;
    float presence;
    float frequency;
  };
  const penalty_case cases[] = {{1.3f, 0.0f, 0.0f}, {0.7f, 0.0f, 0.0f}, {1.0f, 1.5f, 0.0f}, {1.0f, 0.0f, 0.4f},
                                {1.2f, 0.5f, 0.3f}, {1.0f, -1.0f, 0.0f}, {1.0f, 0.0f, 0.0f}};
  constexpr auto num_cases = static_cast<int32_t>(std::size(cases));
  constexpr int32_t rows = 2 * num_cases;
  const std::vector<int32_t> prompt = {11, 311, 2000, 5, 5 + 1};  // 11 and 311 are favourites
  auto row_logits = [&](int32_t r) -> const std::vector<float>& { return r < num_cases ? base : shifted; };

  std::vector<device_sampling_params> params;
  std::vector<inflight::sampler> cpu;
  std::vector<float> logits;
  for (int32_t r = 0; r < rows; ++r) {
    const penalty_case& c = cases[r % num_cases];
    device_sampling_params p = greedy_params(4);
    p.repetition_penalty = c.repetition;
    p.presence_penalty = c.presence;
    p.frequency_penalty = c.frequency;
    params.push_back(p);
    inflight::sampling_params cpu_params;
    cpu_params.temperature = 0.0f;
    cpu_params.repetition_penalty = c.repetition;
    cpu_params.presence_penalty = c.presence;
    cpu_params.frequency_penalty = c.frequency;
    cpu_params.top_logprobs = 4;
    cpu.emplace_back(cpu_params, vocab);
    cpu.back().set_prompt(prompt);
    logits.insert(logits.end(), row_logits(r).begin(), row_logits(r).end());
  }
  sampling_batch batch(logits, vocab, params);

  // The host keeps each row's list: the prompt's tokens and the generated ones, with their counts.
  std::vector<std::vector<int32_t>> generated_counts(rows, std::vector<int32_t>(vocab, 0));
  std::vector<std::vector<int32_t>> cpu_tokens(rows);
  for (int step = 0; step < steps; ++step) {
    std::vector<row_penalties> lists(rows);
    for (int32_t r = 0; r < rows; ++r) {
      for (int32_t id = 0; id < vocab; ++id) {
        const bool in_prompt = std::find(prompt.begin(), prompt.end(), id) != prompt.end();
        const int32_t count = generated_counts[static_cast<size_t>(r)][static_cast<size_t>(id)];
        if (in_prompt || count > 0) {
          lists[static_cast<size_t>(r)].tokens.push_back(id);
          lists[static_cast<size_t>(r)].counts.push_back(count);
        }
      }
    }
    batch.set_penalties(lists);
    batch.launch();
    const launch_result result = batch.result();
    for (int32_t r = 0; r < rows; ++r) {
      INFO("case " << r % num_cases << (r < num_cases ? "" : " shifted") << ", step " << step);
      std::vector<float> scratch = row_logits(r);
      const inflight::sample_result expected = cpu[static_cast<size_t>(r)].sample(scratch.data());
      const int32_t token = result.tokens[static_cast<size_t>(r)];
      CHECK(token == expected.token);
      CHECK(std::abs(result.logprobs[static_cast<size_t>(r)] - expected.logprob) < logprob_tolerance);
      // The reported list is the raw one, whatever the penalties.
      REQUIRE(result.num_top[static_cast<size_t>(r)] == expected.num_top);
      for (int32_t i = 0; i < expected.num_top; ++i) {
        CHECK(result.top_tokens[static_cast<size_t>(r) * max_top + static_cast<size_t>(i)] == expected.top[static_cast<size_t>(i)].token);
      }
      ++generated_counts[static_cast<size_t>(r)][static_cast<size_t>(expected.token)];
      cpu_tokens[static_cast<size_t>(r)].push_back(expected.token);
    }
    CHECK(same_bits(batch.logits(), logits));  // restored bit for bit
  }
  // The cases are not vacuous: the strong presence penalty walks through the favourites, and on the
  // shifted logits repetition 1.3 must multiply prompt token 11 (-4 * 1.3 = -5.2 < -4.2: token 111 wins),
  // where dividing (-3.08) would keep it.
  int32_t distinct = 0;
  for (int32_t count : generated_counts[2]) distinct += count > 0 ? 1 : 0;
  CHECK(distinct >= 3);
  CHECK(cpu_tokens[static_cast<size_t>(num_cases)][0] == 111);
}

TEST_CASE("top-k = 1 is greedy at any temperature") {
  INFLIGHT_REQUIRE_CUDA_DEVICE();
  constexpr int32_t vocab = 49152;
  const float temperatures[] = {0.3f, 1.0f, 2.0f, 5.0f};
  std::vector<device_sampling_params> params;
  for (int i = 0; i < 8; ++i) params.push_back(random_params(temperatures[i % 4], 1, i < 4 ? 1.0f : 0.9f, 0.0f, 77 + i));
  const std::vector<float> logits = normal_logits(params.size() * vocab, 1.0f, 3);
  sampling_batch batch(logits, vocab, params);
  for (int launch = 0; launch < 5; ++launch) {
    batch.launch();
    const launch_result result = batch.result();
    for (size_t r = 0; r < params.size(); ++r) CHECK(result.tokens[r] == host_argmax(logits.data() + r * vocab, vocab));
  }
}

TEST_CASE("draws follow the filtered distribution and never pick a filtered-out token") {
  INFLIGHT_REQUIRE_CUDA_DEVICE();
  // Most likely first: 0 (.30), 2 (.21), 4 (.16), 3 (.11), 6 (.08), 7 (.08), 1 (.04), 5 (.02).
  const std::vector<float> logits = logits_of({0.30, 0.04, 0.21, 0.11, 0.16, 0.02, 0.08, 0.08});
  struct filter_case {
    float temperature;
    int32_t top_k;
    float top_p;
    float min_p;
  };
  const filter_case cases[] = {
      {1.0f, 0, 1.0f, 0.0f},   // plain softmax
      {0.5f, 0, 1.0f, 0.0f},   // sharpened
      {2.0f, 0, 1.0f, 0.0f},   // flattened
      {1.0f, 3, 1.0f, 0.0f},   // {0, 2, 4}
      {1.0f, 5, 1.0f, 0.0f},   // the tie at .08: id 6 in, id 7 out
      {1.0f, 6, 1.0f, 0.0f},   // both
      {1.0f, 0, 0.7f, 0.0f},   // .67 < .7 <= .78: {0, 2, 4, 3}
      {1.0f, 0, 0.25f, 0.0f},  // the top token alone
      {1.0f, 0, 1.0f, 0.3f},   // weight >= .3: {0, 2, 4, 3}
      {0.5f, 0, 1.0f, 0.2f},   // min-p on the sharpened distribution: {0, 2, 4}
      {0.8f, 6, 0.9f, 0.1f},   // all three: top-p cuts between the tied 6 and 7
      {1.0f, 4, 0.8f, 0.0f},   // top-p over the top-k survivors: .8 of .78 -> {0, 2, 4}
  };
  for (const filter_case& c : cases) {
    INFO("T " << c.temperature << ", top_k " << c.top_k << ", top_p " << c.top_p << ", min_p " << c.min_p);
    const std::vector<double> expected =
        filtered_probabilities(logits.data(), 8, c.temperature, c.top_k, c.top_p, c.min_p);
    check_frequencies(draw_frequencies(logits, random_params(c.temperature, c.top_k, c.top_p, c.min_p, 100)), expected);
  }

  // The same 8 tokens scattered in a 4096-token row of -inf: the vectorised path, with most of the row
  // at zero weight.
  std::vector<float> wide(4096, -inf);
  const int32_t ids[] = {4095, 3, 1024, 2047, 5, 4000, 77, 1000};
  for (size_t i = 0; i < 8; ++i) wide[static_cast<size_t>(ids[i])] = logits[i];
  for (const filter_case& c : {filter_case{1.0f, 0, 1.0f, 0.0f}, filter_case{1.0f, 0, 0.7f, 0.0f}, filter_case{1.0f, 5, 1.0f, 0.0f}}) {
    INFO("wide row: T " << c.temperature << ", top_k " << c.top_k << ", top_p " << c.top_p);
    const std::vector<double> expected = filtered_probabilities(wide.data(), 4096, c.temperature, c.top_k, c.top_p, c.min_p);
    check_frequencies(draw_frequencies(wide, random_params(c.temperature, c.top_k, c.top_p, c.min_p, 5000)), expected);
  }
}

TEST_CASE("top-p keeps exactly the nucleus of a large ladder of logits") {
  INFLIGHT_REQUIRE_CUDA_DEVICE();
  // As the CPU test: 2000 tokens at scattered ids, logits 0, -0.003, ..., the rest far below; every
  // nucleus token has probability near 1e-3, so 20000 draws hit each and would hit one past the edge.
  constexpr int32_t vocab = 8192;
  std::vector<float> logits(vocab, -60.0f);
  std::vector<int32_t> ids(vocab);
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), std::mt19937(21));
  for (int32_t r = 0; r < 2000; ++r) logits[static_cast<size_t>(ids[static_cast<size_t>(r)])] = -0.003f * static_cast<float>(r);
  for (float temperature : {1.0f, 0.5f}) {
    INFO("temperature " << temperature);
    const std::vector<double> expected = filtered_probabilities(logits.data(), vocab, temperature, 0, 0.5f, 0.0f);
    const std::vector<double> frequencies = draw_frequencies(logits, random_params(temperature, 0, 0.5f, 0.0f, 22), 1000, 20);
    int32_t nucleus = 0;
    int32_t outside = 0;
    int32_t missed = 0;
    for (int32_t i = 0; i < vocab; ++i) {
      nucleus += expected[static_cast<size_t>(i)] > 0.0 ? 1 : 0;
      if (expected[static_cast<size_t>(i)] == 0.0 && frequencies[static_cast<size_t>(i)] > 0.0) ++outside;
      if (expected[static_cast<size_t>(i)] > 0.0 && frequencies[static_cast<size_t>(i)] == 0.0) ++missed;
    }
    CHECK(nucleus > 100);
    CHECK(outside == 0);
    CHECK(missed == 0);
  }
}

TEST_CASE("ties at a filter's edge go to the lowest ids") {
  INFLIGHT_REQUIRE_CUDA_DEVICE();
  // 1000 equal logits and top_p 0.5: exactly ids 0..499 (the selection runs into the id bits).
  std::vector<double> frequencies = draw_frequencies(std::vector<float>(1000, 0.25f), random_params(1.0f, 0, 0.5f, 0.0f, 5), 1000, 20);
  int32_t distinct = 0;
  for (size_t i = 0; i < frequencies.size(); ++i) {
    if (i >= 500) CHECK(frequencies[i] == 0.0);
    distinct += frequencies[i] > 0.0 ? 1 : 0;
  }
  CHECK(distinct > 480);
  // Top-k through a block of 3000 equal logits in a 49152 vocabulary: ids 0..2999 are tied at the top and
  // k = 2500 keeps the lowest 2500 (more than the shared-memory list: the selection stays on the row).
  std::vector<float> wide = normal_logits(49152, 1.0f, 8);
  for (size_t i = 0; i < 3000; ++i) wide[i] = 10.0f;
  frequencies = draw_frequencies(wide, random_params(1.0f, 2500, 1.0f, 0.0f, 6), 200, 20);
  for (size_t i = 2500; i < wide.size(); ++i) {
    if (frequencies[i] > 0.0) FAIL_CHECK("token " << i << " drawn past the top-k cut");
  }
}

TEST_CASE("sampled tokens on a 128k vocabulary respect top-k and min-p after penalties") {
  INFLIGHT_REQUIRE_CUDA_DEVICE();
  constexpr int32_t vocab = 128256;
  const std::vector<float> base = normal_logits(vocab, 3.0f, 4);
  const std::vector<int32_t> ranked = ranked_ids(base.data(), vocab);
  // Penalise the three most likely tokens hard, so that the filters must see the penalised logits.
  device_sampling_params params = random_params(0.7f, 40, 0.95f, 0.02f, 11);
  params.repetition_penalty = 3.0f;
  params.num_top_logprobs = 20;
  constexpr int32_t rows = 64;
  std::vector<float> logits;
  for (int32_t r = 0; r < rows; ++r) logits.insert(logits.end(), base.begin(), base.end());
  std::vector<device_sampling_params> all(rows, params);
  for (int32_t r = 0; r < rows; ++r) all[static_cast<size_t>(r)].seed += static_cast<uint64_t>(r);
  sampling_batch batch(logits, vocab, all);
  const row_penalties prompt{{ranked[0], ranked[1], ranked[2]}, {0, 0, 0}};
  batch.set_penalties(std::vector<row_penalties>(rows, prompt));

  std::vector<float> penalised = base;
  for (int32_t id : prompt.tokens) {
    float& logit = penalised[static_cast<size_t>(id)];
    logit = logit > 0.0f ? logit / 3.0f : logit * 3.0f;
  }
  const std::vector<double> allowed = filtered_probabilities(penalised.data(), vocab, 0.7f, 40, 0.95f, 0.02f);
  const double log_sum_exp = host_log_sum_exp(base.data(), vocab);
  for (int launch = 0; launch < 10; ++launch) {
    batch.launch();
    const launch_result result = batch.result();
    for (int32_t r = 0; r < rows; ++r) {
      const int32_t token = result.tokens[static_cast<size_t>(r)];
      REQUIRE(token >= 0);
      REQUIRE(token < vocab);
      CHECK(allowed[static_cast<size_t>(token)] > 0.0);
      CHECK(std::abs(result.logprobs[static_cast<size_t>(r)] - (base[static_cast<size_t>(token)] - log_sum_exp)) < logprob_tolerance);
      CHECK(result.top_tokens[static_cast<size_t>(r) * max_top] == ranked[0]);  // raw, not penalised
    }
  }
  CHECK(same_bits(batch.logits(), logits));
}

TEST_CASE("a seeded row is reproducible and successive steps draw anew") {
  INFLIGHT_REQUIRE_CUDA_DEVICE();
  constexpr int32_t vocab = 49152;
  const std::vector<float> base = normal_logits(vocab, 0.5f, 5);  // flat: thousands of likely tokens
  // Rows 0 and 1 share a seed; row 2 has another; row 3 shares row 0's seed five steps ahead.
  std::vector<device_sampling_params> params(4, random_params(1.0f, 0, 0.95f, 0.0f, 42));
  params[2].seed = 43;
  params[3].rng_step = 5;
  std::vector<float> logits;
  for (size_t r = 0; r < params.size(); ++r) logits.insert(logits.end(), base.begin(), base.end());
  sampling_batch batch(logits, vocab, params);
  std::vector<std::vector<int32_t>> tokens(4);
  constexpr int launches = 20;
  for (int launch = 0; launch < launches; ++launch) {
    batch.launch();
    const launch_result result = batch.result();
    for (size_t r = 0; r < 4; ++r) tokens[r].push_back(result.tokens[r]);
  }
  CHECK(tokens[0] == tokens[1]);
  int32_t differ = 0;
  for (int i = 0; i < launches; ++i) differ += tokens[0][static_cast<size_t>(i)] != tokens[2][static_cast<size_t>(i)] ? 1 : 0;
  CHECK(differ >= launches - 2);
  for (int i = 0; i + 5 < launches; ++i) CHECK(tokens[3][static_cast<size_t>(i)] == tokens[0][static_cast<size_t>(i + 5)]);
  std::vector<int32_t> distinct = tokens[0];
  std::sort(distinct.begin(), distinct.end());
  CHECK(std::unique(distinct.begin(), distinct.end()) - distinct.begin() >= launches - 2);
  // Setting the counter back replays the same draw.
  const std::vector<device_sampling_params> after = batch.params();
  CHECK(after[0].rng_step == launches);
  CHECK(after[3].rng_step == launches + 5);
  batch.set_params(params);
  batch.launch();
  CHECK(batch.result().tokens[0] == tokens[0][0]);
}

TEST_CASE("a captured CUDA graph replays with fresh random numbers") {
  INFLIGHT_REQUIRE_CUDA_DEVICE();
  constexpr int32_t vocab = 4096;
  const std::vector<float> logits(2 * vocab, 0.0f);  // uniform over 4096 tokens
  const std::vector<device_sampling_params> params = {random_params(1.0f, 0, 1.0f, 0.0f, 1),
                                                      random_params(1.0f, 0, 0.9f, 0.0f, 2)};
  sampling_batch batch(logits, vocab, params);
  cudaStream_t stream = nullptr;
  INFLIGHT_CUDA_CHECK(cudaStreamCreate(&stream));
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  INFLIGHT_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  batch.launch(stream);
  INFLIGHT_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
  INFLIGHT_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  std::vector<int32_t> drawn;
  for (int replay = 0; replay < 6; ++replay) {
    INFLIGHT_CUDA_CHECK(cudaGraphLaunch(exec, stream));
    INFLIGHT_CUDA_CHECK(cudaStreamSynchronize(stream));
    drawn.push_back(batch.result().tokens[0]);
  }
  INFLIGHT_CUDA_CHECK(cudaGraphExecDestroy(exec));
  INFLIGHT_CUDA_CHECK(cudaGraphDestroy(graph));
  INFLIGHT_CUDA_CHECK(cudaStreamDestroy(stream));
  for (const device_sampling_params& after : batch.params()) CHECK(after.rng_step == 6);
  std::vector<int32_t> distinct = drawn;
  std::sort(distinct.begin(), distinct.end());
  CHECK(std::unique(distinct.begin(), distinct.end()) - distinct.begin() >= 5);
  // The first replay drew what a direct launch at step 0 draws.
  batch.set_params(params);
  batch.launch();
  CHECK(batch.result().tokens[0] == drawn[0]);
}

TEST_CASE("rows with different params share one launch") {
  INFLIGHT_REQUIRE_CUDA_DEVICE();
  constexpr int32_t vocab = 49152;
  std::vector<device_sampling_params> params;
  params.push_back(greedy_params());                                 // 0
  params.push_back(greedy_params(5));                                // 1
  params.push_back(random_params(1.0f, 1, 1.0f, 0.0f, 3));           // 2: top-k 1
  params.push_back(random_params(0.7f, 40, 0.9f, 0.05f, 4));         // 3: every filter
  params.push_back(random_params(1.5f, 0, 1.0f, 0.0f, 5));           // 4: plain
  params.push_back(greedy_params(20));                               // 5: penalised greedy
  params[5].frequency_penalty = 2.0f;
  params.push_back(random_params(1.0f, 0, 0.5f, 0.0f, 6));           // 6: no logprob wanted
  params[6].want_logprob = 0;
  params.push_back(random_params(1.0f, 100000, 0.3f, 1.0f, 7));      // 7: top_k past the vocab; min_p 1
  const auto rows = static_cast<int32_t>(params.size());
  std::vector<float> logits = normal_logits(static_cast<size_t>(rows) * vocab, 2.0f, 6);
  auto row = [&](int32_t r) { return logits.data() + static_cast<size_t>(r) * vocab; };
  sampling_batch batch(logits, vocab, params);
  std::vector<row_penalties> lists(rows);
  const int32_t favourite = host_argmax(row(5), vocab);
  lists[5] = {{favourite}, {3}};  // generated three times: -6 for the argmax of row 5
  batch.set_penalties(lists);
  batch.launch();
  const launch_result result = batch.result();

  auto token = [&](int32_t r) { return result.tokens[static_cast<size_t>(r)]; };
  CHECK(token(0) == host_argmax(row(0), vocab));
  CHECK(token(1) == host_argmax(row(1), vocab));
  CHECK(result.num_top[1] == 5);
  CHECK(result.num_top[0] == 0);
  CHECK(token(2) == host_argmax(row(2), vocab));
  CHECK(filtered_probabilities(row(3), vocab, 0.7f, 40, 0.9f, 0.05f)[static_cast<size_t>(token(3))] > 0.0);
  CHECK(token(4) >= 0);
  CHECK(token(4) < vocab);
  std::vector<float> penalised(row(5), row(5) + vocab);
  penalised[static_cast<size_t>(favourite)] -= 6.0f;
  CHECK(token(5) == host_argmax(penalised.data(), vocab));
  CHECK(result.top_tokens[5 * max_top] == favourite);  // raw list
  CHECK(result.logprobs[6] == 0.0f);
  CHECK(token(7) == host_argmax(row(7), vocab));  // min_p 1 keeps only the top token
  for (int32_t r = 0; r < rows; ++r) {
    if (r == 6) continue;
    INFO("row " << r);
    CHECK(std::abs(result.logprobs[static_cast<size_t>(r)] - (row(r)[token(r)] - host_log_sum_exp(row(r), vocab))) < logprob_tolerance);
  }
  for (const device_sampling_params& after : batch.params()) CHECK(after.rng_step == 1);
}

TEST_CASE("rows without a finite maximum still give a valid token") {
  INFLIGHT_REQUIRE_CUDA_DEVICE();
  constexpr int32_t vocab = 4096;
  std::vector<float> logits(4 * vocab, -inf);
  std::fill(logits.begin() + vocab, logits.begin() + 2 * vocab, nan_value);  // row 1: all NaN
  logits[2 * vocab + 300] = inf;                                              // row 2: one +inf
  logits[3 * vocab + 9] = 1.0f;                                               // row 3: one finite logit
  const std::vector<device_sampling_params> params(4, random_params(1.0f, 5, 0.9f, 0.1f, 9));
  sampling_batch batch(logits, vocab, params);
  batch.launch();
  const launch_result result = batch.result();
  CHECK(result.tokens[0] == 0);
  CHECK(result.tokens[1] == 0);
  CHECK(result.tokens[2] == 300);
  CHECK(result.tokens[3] == 9);
  CHECK(std::abs(result.logprobs[3]) < logprob_tolerance);
}

TEST_CASE("launch_sample rejects bad arguments by name") {
  INFLIGHT_REQUIRE_CUDA_DEVICE();
  device_buffer<float> logits(64);
  device_buffer<device_sampling_params> params(std::vector<device_sampling_params>(1));
  device_buffer<int32_t> tokens(1);
  device_buffer<float> logprobs(1);
  device_buffer<int32_t> num_top(1);
  device_buffer<int32_t> top_tokens(max_top);
  device_buffer<float> top_logprobs(max_top);
  device_sample_outputs outputs;
  outputs.tokens = tokens.get();
  outputs.logprobs = logprobs.get();
  outputs.num_top = num_top.get();
  outputs.top_tokens = top_tokens.get();
  outputs.top_logprobs = top_logprobs.get();
  const device_penalty_lists none;
  CHECK_THROWS_WITH_AS(launch_sample(logits.get(), -1, 64, params.get(), none, outputs, nullptr),
                       doctest::Contains("rows"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(launch_sample(logits.get(), 1, 0, params.get(), none, outputs, nullptr),
                       doctest::Contains("vocab_size"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(launch_sample(nullptr, 1, 64, params.get(), none, outputs, nullptr),
                       doctest::Contains("logits"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(launch_sample(logits.get(), 1, 64, nullptr, none, outputs, nullptr),
                       doctest::Contains("params"), std::invalid_argument);
  device_sample_outputs missing = outputs;
  missing.top_logprobs = nullptr;
  CHECK_THROWS_WITH_AS(launch_sample(logits.get(), 1, 64, params.get(), none, missing, nullptr),
                       doctest::Contains("top_logprobs"), std::invalid_argument);
  device_buffer<int32_t> offsets(std::vector<int32_t>{0, 0});
  device_penalty_lists partial;
  partial.offsets = offsets.get();
  CHECK_THROWS_WITH_AS(launch_sample(logits.get(), 1, 64, params.get(), partial, outputs, nullptr),
                       doctest::Contains("penalties.tokens"), std::invalid_argument);
  CHECK_NOTHROW(launch_sample(logits.get(), 0, 64, params.get(), none, outputs, nullptr));
}
