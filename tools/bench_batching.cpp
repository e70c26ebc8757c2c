// Batching benchmark (not a test): static vs continuous batching on the engine, as in Orca (OSDI '22) and
// vLLM (SOSP '23), plus latency under Poisson arrivals and the engine's own overhead.
//
//   bench_batching seed     [--requests 64] [--prompt-len 32] [--mean-tokens 128] [--max-batch 64]
//                           [--max-tokens-list 32,64,...,1536] [--seed 7] [--json PATH]
//   bench_batching latency  [--rates 1,2,4,8] [--duration-requests 64] [--prompt-len 32] [--mean-tokens 64]
//                           [--max-tokens 256] [--max-batch 64] [--seed 7] [--json PATH]
//   bench_batching overhead [--batch 64] [--tokens 128] [--prompt-len 32] [--json PATH]
//   common: [--model PATH] [--device auto|cpu|cuda] [--threads T] [--kv-cache-mb 1024] [--max-step-tokens N]
//           [--gpu-memory-fraction 0.9] [--no-cuda-graphs] [--dummy-weights CONFIG.json (cuda only: random
//           weights of a Hugging Face config's shape; the GGUF still gives the tokenizer)]
//
// Workload: prompts of exactly --prompt-len random token ids (1000..19999, different per request), greedy,
// ignore_eos, and each request's output length drawn from an exponential distribution with the given mean,
// rounded up to >= 1 and capped; the length is enforced through max_tokens, so every request must end with
// finish reason `length` after exactly its drawn count (checked: a mismatch is an engine bug, not noise).
// Draws use our own inverse-CDF on mt19937_64, not std::exponential_distribution, whose output differs
// between standard libraries: the same --seed gives the same workload everywhere.
//
// The step token budget defaults to max(512, max-batch x prompt-len) in every mode: with 512 the static
// baseline could admit only 512 / prompt-len sequences into its one admission step, and would be measured
// at a smaller batch than continuous batching.
//
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "atomic_file.hpp"
#include "backend_choice.hpp"
#include "cli_options.hpp"
#include "sweep_progress.hpp"
#include "inflight/cuda_backend.hpp"
#include "inflight/chat_template.hpp"
#include "inflight/cpu_backend.hpp"
#include "inflight/engine.hpp"
#include "inflight/gguf.hpp"
#include "inflight/tokenizer.hpp"

using namespace inflight;
using cli::usage_error;

namespace {

using clock = std::chrono::steady_clock;

constexpr int32_t min_prompt_token = 1000, max_prompt_token = 19999;  // ordinary text pieces, no specials

double seconds_between(clock::time_point from, clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

// ---- workload -------------------------------------------------------------------------------------------

// Uniform in [0, 1) from the top 53 bits, the same on every platform.
double uniform01(std::mt19937_64& rng) { return double(rng() >> 11) * 0x1.0p-53; }
double exponential(std::mt19937_64& rng, double mean) { return -mean * std::log1p(-uniform01(rng)); }

// Output lengths before capping: ceil of an exponential draw, at least 1.
std::vector<int32_t> draw_lengths(std::mt19937_64& rng, int32_t count, double mean) {
  std::vector<int32_t> lengths;
  for (int32_t i = 0; i < count; ++i) {
    const double draw = std::ceil(exponential(rng, mean));
    lengths.push_back(int32_t(std::clamp(draw, 1.0, 1e9)));
  }
  return lengths;
}

std::vector<int32_t> capped(std::vector<int32_t> lengths, int32_t cap) {
  for (int32_t& length : lengths) length = std::min(length, cap);
  return lengths;
}

std::vector<std::vector<int32_t>> draw_prompts(std::mt19937_64& rng, int32_t count, int32_t length) {
  std::vector<std::vector<int32_t>> prompts(static_cast<size_t>(count));
  for (auto& prompt : prompts)
    for (int32_t i = 0; i < length; ++i)
      prompt.push_back(min_prompt_token + int32_t(rng() % uint64_t(max_prompt_token - min_prompt_token + 1)));
  return prompts;
}

// False with --dummy-weights: a random model's token ids need not exist in the GGUF's tokenizer, so its
// requests come back as ids only (every request of the run is made the same way).
bool detokenize_outputs = true;

generation_params make_request(const std::vector<int32_t>& prompt, int32_t output_length) {
  generation_params params;
  params.detokenize = detokenize_outputs;
  params.prompt_tokens = prompt;
  params.sampling.temperature = 0;  // greedy: no sampling cost differences between runs
  params.max_tokens = output_length;
  params.ignore_eos = true;
  return params;
}

// ---- measurement ----------------------------------------------------------------------------------------

// One request's timeline. The engine calls it from its threads, one call at a time per request; the main
// thread reads it only after wait_idle(), which orders it after the final event.
class timing_sink final : public generation_sink {
 public:
  explicit timing_sink(int32_t expected_tokens) : expected_tokens_(expected_tokens) {}

  void on_delta(const generation_delta& delta) override {
    if (delta.token < 0) return;
    const auto now = clock::now();
    if (tokens_seen_ == 0) first_token_ = now;
    last_token_ = now;
    ++tokens_seen_;
  }
  void on_final(const generation_final& final_event) override { final_ = final_event; }

  void mark_submitted() { submitted_ = clock::now(); }
  double ttft_seconds() const { return seconds_between(submitted_, first_token_); }
  // Time per output token after the first; only meaningful with two or more tokens.
  double tpot_seconds() const { return seconds_between(first_token_, last_token_) / double(tokens_seen_ - 1); }
  int32_t tokens_seen() const { return tokens_seen_; }
  const generation_final& result() const { return final_; }

  // Empty when the request ran as asked: finish `length` after exactly its expected token count, which the
  // deltas and the final event agree on.
  std::string check() const {
    std::ostringstream problem;
    if (final_.error != request_error::none) problem << "error " << to_string(final_.error) << ": " << final_.message;
    else if (final_.reason != engine::finish_reason::length)
      problem << "finish reason " << engine::to_string(final_.reason) << ", expected length";
    else if (final_.completion_tokens != expected_tokens_ || tokens_seen_ != expected_tokens_)
      problem << "completion_tokens " << final_.completion_tokens << ", token deltas " << tokens_seen_
              << ", expected " << expected_tokens_;
    return problem.str();
  }

 private:
  int32_t expected_tokens_;
  int32_t tokens_seen_ = 0;
  clock::time_point submitted_, first_token_, last_token_;
  generation_final final_;
};

struct bench_setup {
  std::string model_path = INFLIGHT_DEFAULT_MODEL;
  std::string device = "auto";
  double gpu_memory_fraction = 0.9;
  bool cuda_graphs = true;
  std::string dummy_config;  // non-empty: CUDA dummy weights of this Hugging Face config
  int threads = 0;
  int32_t max_batch = 64;
  int32_t max_step_tokens = 0;  // 0: max(512, max_batch x prompt_len)
  int64_t kv_cache_mb = 1024;
  bool pipelining = true;
};

// The model file, tokenizer and chat template, loaded once; each engine gets a fresh backend over them.
struct loaded_model {
  std::shared_ptr<const gguf::gguf_file> file;
  std::shared_ptr<const tokenizer> tok;
  chat_template chat;
  int backend_threads = 0;
  std::string backend_description;
};

loaded_model load_model(const bench_setup& setup) {
  auto file = gguf::gguf_file::open(setup.model_path);
  return {file, tokenizer::from_gguf(*file), chat_template::from_gguf(*file), 0, {}};
}

std::unique_ptr<inference_engine> make_engine(loaded_model& model, const bench_setup& setup, int32_t prompt_len,
                                              bool static_batching) {
  cli::backend_choice choice;
  choice.device = setup.device;
  choice.threads = setup.threads;
  choice.max_step_sequences = setup.max_batch;
  choice.max_step_tokens = setup.max_step_tokens > 0 ? setup.max_step_tokens : std::max(512, setup.max_batch * prompt_len);
  choice.kv_cache_mb = setup.kv_cache_mb;
  choice.gpu_memory_fraction = setup.gpu_memory_fraction;
  choice.cuda_graphs = setup.cuda_graphs;
  std::unique_ptr<backend> backend;
  if (!setup.dummy_config.empty()) {
    cuda_backend_options options;
    options.max_step_sequences = choice.max_step_sequences;
    options.max_step_tokens = choice.max_step_tokens;
    options.gpu_memory_fraction = choice.gpu_memory_fraction;
    options.cuda_graphs = choice.cuda_graphs;
    backend = make_dummy_cuda_backend(setup.dummy_config, 1, options);
  } else {
    backend = cli::make_backend(model.file, choice);
  }
  if (const auto* cpu = dynamic_cast<const cpu_backend*>(backend.get())) model.backend_threads = cpu->num_threads();
  model.backend_description = backend->describe();

  engine_options options;
  options.max_num_seqs = setup.max_batch;
  options.max_num_batched_tokens = 0;  // the backend's limit, set above
  options.static_batching = static_batching;
  options.static_batch_window = std::chrono::milliseconds(10);
  options.pipelining = setup.pipelining;
  return inference_engine::create(std::move(backend), model.tok, model.chat, options);
}

// One short request, so that thread pools, page faults of the weights and first-step allocations are paid
// before the clock starts. Its work is subtracted through stats_delta.
void warm_up(inference_engine& engine, int32_t prompt_len) {
  std::mt19937_64 rng(12345);
  auto sink = std::make_shared<timing_sink>(4);
  engine.submit(make_request(draw_prompts(rng, 1, prompt_len)[0], 4), sink);
  engine.wait_idle();
  if (const std::string problem = sink->check(); !problem.empty()) throw std::runtime_error("warm-up: " + problem);
}

engine_stats stats_delta(const engine_stats& after, const engine_stats& before) {
  engine_stats delta = after;
  delta.steps -= before.steps;
  delta.preemptions -= before.preemptions;
  delta.prompt_tokens_computed -= before.prompt_tokens_computed;
  delta.generated_tokens -= before.generated_tokens;
  delta.finished -= before.finished;
  delta.loop_seconds -= before.loop_seconds;
  delta.forward_seconds -= before.forward_seconds;
  delta.sampling_seconds -= before.sampling_seconds;
  return delta;
}

// Share of the busy loop outside both the forward pass and sampling: what the actors themselves cost.
double share_outside_forward_and_sampling(const engine_stats& stats) {
  return stats.loop_seconds > 0 ? 1.0 - (stats.forward_seconds + stats.sampling_seconds) / stats.loop_seconds : 0.0;
}

void check_all(const std::vector<std::shared_ptr<timing_sink>>& sinks, const std::string& what) {
  for (size_t i = 0; i < sinks.size(); ++i) {
    if (const std::string problem = sinks[i]->check(); !problem.empty())
      throw std::runtime_error(what + ": request " + std::to_string(i) + ": " + problem);
  }
}

struct batch_run {
  double wall_seconds = 0;
  int64_t generated_tokens = 0;
  engine_stats stats;  // of the measured requests only
  double tokens_per_second() const { return wall_seconds > 0 ? double(generated_tokens) / wall_seconds : 0.0; }
};

// Submits every request at once and waits for all of them. The static baseline's first batch forms once
// max_batch requests wait (or its formation window, 10 ms here, closes), so it sees the paper's setting:
// all N queued at time 0.
batch_run run_all_at_once(loaded_model& model, const bench_setup& setup, bool static_batching,
                          const std::vector<std::vector<int32_t>>& prompts, const std::vector<int32_t>& lengths) {
  const int32_t prompt_len = int32_t(prompts[0].size());
  auto engine = make_engine(model, setup, prompt_len, static_batching);
  warm_up(*engine, prompt_len);
  const engine_stats before = engine->stats();
  std::vector<std::shared_ptr<timing_sink>> sinks;
  const auto start = clock::now();
  for (size_t i = 0; i < prompts.size(); ++i) {
    sinks.push_back(std::make_shared<timing_sink>(lengths[i]));
    sinks.back()->mark_submitted();
    engine->submit(make_request(prompts[i], lengths[i]), sinks.back());
  }
  engine->wait_idle();
  batch_run run;
  run.wall_seconds = seconds_between(start, clock::now());
  run.stats = stats_delta(engine->stats(), before);
  check_all(sinks, static_batching ? "static run" : "continuous run");
  for (int32_t length : lengths) run.generated_tokens += length;
  return run;
}

// Steps static batching needs when each batch is max_batch requests in submission order and every prompt
// fits in its batch's first step: a request of length L is sampled in L steps (the first at its prefill).
// More steps observed means the batches formed differently (e.g. the first one started before all
// submissions reached the scheduler).
int64_t ideal_static_steps(const std::vector<int32_t>& lengths, int32_t max_batch) {
  int64_t steps = 0;
  for (size_t begin = 0; begin < lengths.size(); begin += size_t(max_batch)) {
    const auto end = lengths.begin() + int64_t(std::min(lengths.size(), begin + size_t(max_batch)));
    steps += *std::max_element(lengths.begin() + int64_t(begin), end);
  }
  return steps;
}

double percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0.0;
  std::sort(values.begin(), values.end());
  const double rank = p / 100.0 * double(values.size() - 1);  // linear interpolation between closest ranks
  const size_t low = size_t(rank);
  const size_t high = std::min(low + 1, values.size() - 1);
  return values[low] + (rank - double(low)) * (values[high] - values[low]);
}

// ---- output ---------------------------------------------------------------------------------------------

std::string json_string(std::string_view text) {
  std::string out = "\"";
  for (const char c : text) {
    if (c == '"' || c == '\\') out += {'\\', c};
    else if (c == '\n') out += "\\n";
    else if (static_cast<unsigned char>(c) < 0x20) out += ' ';
    else out += c;
  }
  return out + '"';
}

// The machine and the settings shared by every subcommand, as the opening members of a JSON object.
std::string json_machine(const loaded_model& model, const bench_setup& setup) {
  std::ostringstream out;
  out << "\"model\": " << json_string(setup.model_path) << ", \"threads\": " << model.backend_threads
      << ", \"hardware_concurrency\": " << std::thread::hardware_concurrency()
      << ", \"backend\": " << json_string(model.backend_description) << ", \"max_batch\": " << setup.max_batch
      << ", \"kv_cache_mb\": " << setup.kv_cache_mb;
  return out.str();
}

void write_file(const std::string& path, const std::string& text) {
  if (path.empty()) return;
  cli::write_file_atomically(path, text);
  std::printf("wrote %s\n", path.c_str());
}

std::vector<int64_t> parse_list(const std::string& option, const std::string& text, int64_t min, int64_t max) {
  std::vector<int64_t> values;
  std::stringstream pieces(text);
  for (std::string piece; std::getline(pieces, piece, ',');) {
    size_t used = 0;
    int64_t value = 0;
    try { value = std::stoll(piece, &used); } catch (const std::exception&) { used = 0; }
    if (used == 0 || used != piece.size() || value < min || value > max)
      throw usage_error("--" + option + ": '" + piece + "' is not an integer in [" + std::to_string(min) + ", " +
                        std::to_string(max) + "]");
    values.push_back(value);
  }
  if (values.empty()) throw usage_error("--" + option + ": empty list");
  return values;
}

std::vector<double> parse_rates(const std::string& text) {
  std::vector<double> rates;
  std::stringstream pieces(text);
  for (std::string piece; std::getline(pieces, piece, ',');) {
    size_t used = 0;
    double rate = 0;
    try { rate = std::stod(piece, &used); } catch (const std::exception&) { used = 0; }
    if (used == 0 || used != piece.size() || !(rate > 0) || rate > 1e6)
      throw usage_error("--rates: '" + piece + "' is not a rate in (0, 1e6] requests/s");
    rates.push_back(rate);
  }
  if (rates.empty()) throw usage_error("--rates: empty list");
  return rates;
}

// Options every subcommand takes; returns false when `name` is none of them.
bool read_common(cli::option_reader& reader, const std::string& name, bench_setup& setup, std::string& json_path) {
  if (name == "model") setup.model_path = reader.string_value();
  else if (name == "threads") setup.threads = int(reader.int_value(0, 1024));
  else if (name == "device") setup.device = reader.string_value();
  else if (name == "gpu-memory-fraction") setup.gpu_memory_fraction = reader.float_value();
  else if (name == "no-cuda-graphs") { reader.flag(); setup.cuda_graphs = false; }
  else if (name == "dummy-weights") {
    setup.dummy_config = reader.string_value();
    detokenize_outputs = false;
  }
  else if (name == "kv-cache-mb") setup.kv_cache_mb = reader.int_value(1, 1 << 20);
  else if (name == "max-step-tokens") setup.max_step_tokens = int32_t(reader.int_value(1, 1 << 20));
  else if (name == "max-batch") setup.max_batch = int32_t(reader.int_value(1, 4096));
  else if (name == "json") json_path = reader.string_value();
  else return false;
  return true;
}

// ---- subcommands ----------------------------------------------------------------------------------------

int run_seed(int argc, char** argv) {
  bench_setup setup;
  std::string json_path;
  int32_t requests = 64, prompt_len = 32;
  double mean_tokens = 128;
  uint64_t seed = 7;
  std::vector<int64_t> max_tokens_list = {32, 64, 128, 256, 512, 1024, 1536};
  cli::option_reader reader(argc, argv);
  while (!reader.done()) {
    const std::string name = reader.next_name();
    if (read_common(reader, name, setup, json_path)) continue;
    if (name == "requests") requests = int32_t(reader.int_value(1, 100000));
    else if (name == "prompt-len") prompt_len = int32_t(reader.int_value(1, 100000));
    else if (name == "mean-tokens") mean_tokens = reader.float_value();
    else if (name == "seed") seed = uint64_t(reader.int_value(0, INT64_MAX));
    else if (name == "max-tokens-list") max_tokens_list = parse_list(name, reader.string_value(), 1, 1 << 20);
    else throw usage_error("unknown option --" + name);
  }
  if (!(mean_tokens > 0)) throw usage_error("--mean-tokens must be positive");

  loaded_model model = load_model(setup);
  std::mt19937_64 rng(seed);
  const auto prompts = draw_prompts(rng, requests, prompt_len);
  const auto uncapped = draw_lengths(rng, requests, mean_tokens);  // one draw, capped per point

  std::printf("seed: %d requests, prompt %d tokens, mean output %.0f tokens, max batch %d, seed %llu\n\n", requests,
              prompt_len, mean_tokens, setup.max_batch, static_cast<unsigned long long>(seed));
  std::printf("| max_tokens | generated | static tok/s | continuous tok/s | ratio | static steps (ideal) "
              "| continuous steps | overhead | preemptions |\n"
              "|-----------:|----------:|-------------:|-----------------:|------:|---------------------:"
              "|-----------------:|---------:|------------:|\n");
  // A point's work: the static run's padded decode slots plus the continuous run's tokens.
  std::vector<double> work;
  for (const int64_t max_tokens : max_tokens_list) {
    const auto lengths = capped(uncapped, int32_t(max_tokens));
    double tokens = 0;
    for (const int32_t length : lengths) tokens += length;
    work.push_back(double(ideal_static_steps(lengths, setup.max_batch)) * std::min<int32_t>(setup.max_batch, requests) +
                   tokens);
  }
  cli::sweep_progress progress("bench_batching seed", work);
  std::ostringstream points;
  for (size_t p = 0; p < max_tokens_list.size(); ++p) {
    const int32_t max_tokens = int32_t(max_tokens_list[p]);
    const auto lengths = capped(uncapped, max_tokens);
    const batch_run fixed = run_all_at_once(model, setup, true, prompts, lengths);
    const batch_run continuous = run_all_at_once(model, setup, false, prompts, lengths);
    const double ratio = fixed.tokens_per_second() > 0 ? continuous.tokens_per_second() / fixed.tokens_per_second() : 0;
    const int64_t ideal = ideal_static_steps(lengths, setup.max_batch);
    std::printf("| %10d | %9lld | %12.1f | %16.1f | %5.2f | %11lld (%6lld) | %16lld | %8.3f | %5lld / %-5lld |\n",
                max_tokens, static_cast<long long>(continuous.generated_tokens), fixed.tokens_per_second(),
                continuous.tokens_per_second(), ratio, static_cast<long long>(fixed.stats.steps),
                static_cast<long long>(ideal), static_cast<long long>(continuous.stats.steps),
                continuous.stats.overhead_share(), static_cast<long long>(fixed.stats.preemptions),
                static_cast<long long>(continuous.stats.preemptions));
    std::fflush(stdout);
    char what[96];
    std::snprintf(what, sizeof what, "max_tokens %d: %.2fx", max_tokens, ratio);
    progress.point_done(p, what);
    const auto run_json = [](const batch_run& run) {
      std::ostringstream out;
      out << "{\"tokens_per_s\": " << run.tokens_per_second() << ", \"wall_s\": " << run.wall_seconds
          << ", \"steps\": " << run.stats.steps << ", \"preemptions\": " << run.stats.preemptions
          << ", \"loop_s\": " << run.stats.loop_seconds << ", \"forward_s\": " << run.stats.forward_seconds
          << ", \"sampling_s\": " << run.stats.sampling_seconds << ", \"overhead_share\": " << run.stats.overhead_share()
          << "}";
      return out.str();
    };
    points << (p ? ",\n    " : "") << "{\"max_tokens\": " << max_tokens
           << ", \"generated_tokens\": " << continuous.generated_tokens << ", \"ratio\": " << ratio
           << ", \"static_ideal_steps\": " << ideal << ", \"static\": " << run_json(fixed)
           << ", \"continuous\": " << run_json(continuous) << "}";
  }
  std::printf("\noverhead: share of the continuous run's busy loop outside the forward pass; preemptions: static / "
              "continuous\n");
  std::ostringstream json;
  json << "{\"experiment\": \"seed\", " << json_machine(model, setup) << ", \"requests\": " << requests
       << ", \"prompt_len\": " << prompt_len << ", \"mean_tokens\": " << mean_tokens << ", \"seed\": " << seed
       << ",\n  \"points\": [\n    " << points.str() << "\n  ]}\n";
  write_file(json_path, json.str());
  return 0;
}

int run_latency(int argc, char** argv) {
  bench_setup setup;
  std::string json_path;
  int32_t requests = 64, prompt_len = 32, max_tokens = 256;
  double mean_tokens = 64;
  uint64_t seed = 7;
  std::vector<double> rates = {1, 2, 4, 8};
  cli::option_reader reader(argc, argv);
  while (!reader.done()) {
    const std::string name = reader.next_name();
    if (read_common(reader, name, setup, json_path)) continue;
    if (name == "rates") rates = parse_rates(reader.string_value());
    else if (name == "duration-requests") requests = int32_t(reader.int_value(1, 100000));
    else if (name == "prompt-len") prompt_len = int32_t(reader.int_value(1, 100000));
    else if (name == "mean-tokens") mean_tokens = reader.float_value();
    else if (name == "max-tokens") max_tokens = int32_t(reader.int_value(1, 1 << 20));
    else if (name == "seed") seed = uint64_t(reader.int_value(0, INT64_MAX));
    else throw usage_error("unknown option --" + name);
  }
  if (!(mean_tokens > 0)) throw usage_error("--mean-tokens must be positive");

  loaded_model model = load_model(setup);
  std::printf("latency: %d requests per rate, prompt %d tokens, mean output %.0f (cap %d), max batch %d, continuous\n\n",
              requests, prompt_len, mean_tokens, max_tokens, setup.max_batch);
  std::printf("| rate req/s | TTFT p50 ms | TTFT p99 ms | TPOT p50 ms | TPOT p99 ms | tok/s | overhead |\n"
              "|-----------:|------------:|------------:|------------:|------------:|------:|---------:|\n");
  std::vector<double> work;  // a point lasts about as long as its arrivals are spread
  for (const double rate : rates) work.push_back(requests / rate + 1);
  cli::sweep_progress progress("bench_batching latency", work);
  std::ostringstream points;
  for (size_t r = 0; r < rates.size(); ++r) {
    const double rate = rates[r];
    // The same workload at every rate (seeded alike), so only the arrival spacing differs.
    std::mt19937_64 rng(seed);
    const auto prompts = draw_prompts(rng, requests, prompt_len);
    const auto lengths = capped(draw_lengths(rng, requests, mean_tokens), max_tokens);
    std::vector<double> arrivals;
    for (double at = 0; int32_t(arrivals.size()) < requests; at += exponential(rng, 1.0 / rate)) arrivals.push_back(at);

    auto engine = make_engine(model, setup, prompt_len, false);
    warm_up(*engine, prompt_len);
    const engine_stats before = engine->stats();
    std::vector<std::shared_ptr<timing_sink>> sinks;
    const auto start = clock::now();
    for (int32_t i = 0; i < requests; ++i) {
      std::this_thread::sleep_until(start + std::chrono::duration_cast<clock::duration>(
                                                std::chrono::duration<double>(arrivals[size_t(i)])));
      sinks.push_back(std::make_shared<timing_sink>(lengths[size_t(i)]));
      sinks.back()->mark_submitted();
      engine->submit(make_request(prompts[size_t(i)], lengths[size_t(i)]), sinks.back());
    }
    engine->wait_idle();
    const double wall = seconds_between(start, clock::now());
    const engine_stats stats = stats_delta(engine->stats(), before);
    check_all(sinks, "rate " + std::to_string(rate));

    std::vector<double> ttft, tpot;
    int64_t generated = 0;
    for (const auto& sink : sinks) {
      ttft.push_back(sink->ttft_seconds() * 1e3);
      if (sink->tokens_seen() >= 2) tpot.push_back(sink->tpot_seconds() * 1e3);
      generated += sink->tokens_seen();
    }
    const double throughput = double(generated) / wall;
    const double ttft50 = percentile(ttft, 50), ttft99 = percentile(ttft, 99);
    const double tpot50 = percentile(tpot, 50), tpot99 = percentile(tpot, 99);
    std::printf("| %10.4g | %11.1f | %11.1f | %11.2f | %11.2f | %5.0f | %8.3f |\n", rate, ttft50, ttft99, tpot50, tpot99,
                throughput, stats.overhead_share());
    std::fflush(stdout);
    char what[96];
    std::snprintf(what, sizeof what, "rate %.4g req/s: %.0f tokens/s", rate, throughput);
    progress.point_done(r, what);
    points << (r ? ",\n    " : "") << "{\"rate\": " << rate << ", \"ttft_ms_p50\": " << ttft50
           << ", \"ttft_ms_p99\": " << ttft99 << ", \"tpot_ms_p50\": " << tpot50 << ", \"tpot_ms_p99\": " << tpot99
           << ", \"tokens_per_s\": " << throughput << ", \"generated_tokens\": " << generated << ", \"wall_s\": " << wall
           << ", \"steps\": " << stats.steps << ", \"preemptions\": " << stats.preemptions
           << ", \"overhead_share\": " << stats.overhead_share() << "}";
  }
  std::printf("\nTTFT: submit to first token; TPOT: (last - first token time) / (tokens - 1), requests with >= 2 "
              "tokens\n");
  std::ostringstream json;
  json << "{\"experiment\": \"latency\", " << json_machine(model, setup) << ", \"requests\": " << requests
       << ", \"prompt_len\": " << prompt_len << ", \"mean_tokens\": " << mean_tokens << ", \"max_tokens\": " << max_tokens
       << ", \"seed\": " << seed << ",\n  \"points\": [\n    " << points.str() << "\n  ]}\n";
  write_file(json_path, json.str());
  return 0;
}

int run_overhead(int argc, char** argv) {
  bench_setup setup;
  std::string json_path;
  int32_t batch = 64, tokens = 128, prompt_len = 32;
  cli::option_reader reader(argc, argv);
  while (!reader.done()) {
    const std::string name = reader.next_name();
    if (name == "batch") batch = int32_t(reader.int_value(1, 4096));
    else if (name == "tokens") tokens = int32_t(reader.int_value(1, 1 << 20));
    else if (name == "prompt-len") prompt_len = int32_t(reader.int_value(1, 100000));
    else if (!read_common(reader, name, setup, json_path)) throw usage_error("unknown option --" + name);
  }
  setup.max_batch = batch;  // every request decodes in the one batch

  loaded_model model = load_model(setup);
  std::mt19937_64 rng(7);
  const auto prompts = draw_prompts(rng, batch, prompt_len);
  const std::vector<int32_t> lengths(size_t(batch), tokens);

  // Pipelined (the default) and one step at a time, alternated twice in one process, so that the two are
  // compared under the same machine conditions.
  std::printf("overhead: batch %d, %d tokens each, prompt %d tokens\n\n", batch, tokens, prompt_len);
  std::printf("| pipelining | steps | tokens/s | loop ms/step | forward ms/step | sampling ms/step | outside forward "
              "| outside forward+sampling |\n|---|---:|---:|---:|---:|---:|---:|---:|\n");
  std::ostringstream runs;
  for (int round = 0; round < 4; ++round) {
    setup.pipelining = round % 2 == 0;
    const batch_run run = run_all_at_once(model, setup, false, prompts, lengths);
    const engine_stats& stats = run.stats;
    const double steps = double(std::max<int64_t>(1, stats.steps));
    std::printf("| %s | %lld | %.1f | %.3f | %.3f | %.3f | %.2f%% | %.2f%% |\n", setup.pipelining ? "on" : "off",
                static_cast<long long>(stats.steps), run.tokens_per_second(), 1e3 * stats.loop_seconds / steps,
                1e3 * stats.forward_seconds / steps, 1e3 * stats.sampling_seconds / steps,
                100 * stats.overhead_share(), 100 * share_outside_forward_and_sampling(stats));
    runs << (round ? ",\n    " : "") << "{\"pipelining\": " << (setup.pipelining ? "true" : "false")
         << ", \"steps\": " << stats.steps << ", \"wall_s\": " << run.wall_seconds
         << ", \"tokens_per_s\": " << run.tokens_per_second() << ", \"loop_s\": " << stats.loop_seconds
         << ", \"forward_s\": " << stats.forward_seconds << ", \"sampling_s\": " << stats.sampling_seconds
         << ", \"overhead_share\": " << stats.overhead_share()
         << ", \"share_outside_forward_and_sampling\": " << share_outside_forward_and_sampling(stats) << "}";
  }
  std::printf("\n%d backend threads; outside forward: share of the engine's busy loop not in the forward pass (sampling, scheduling,\n"
              "messaging, detokenizing); outside forward+sampling: what the actors themselves cost.\n",
              model.backend_threads);
  std::ostringstream json;
  json << "{\"experiment\": \"overhead\", " << json_machine(model, setup) << ", \"batch\": " << batch
       << ", \"tokens\": " << tokens << ", \"prompt_len\": " << prompt_len << ",\n  \"runs\": [\n    " << runs.str()
       << "\n  ]}\n";
  write_file(json_path, json.str());
  return 0;
}

constexpr const char* usage = R"(usage: bench_batching seed|latency|overhead [options]

  seed      static vs continuous batching throughput over a range of max_tokens caps
  latency   TTFT / TPOT percentiles under Poisson arrivals (continuous batching)
  overhead  one batch decoding together: where the engine's step time goes

See the comment at the top of tools/bench_batching.cpp for every option.
)";

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::string_view(argv[1]) == "--help" || std::string_view(argv[1]) == "-h") {
    std::fputs(usage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const std::string_view command = argv[1];
  try {
    // The option reader skips its first argument, here the subcommand.
    if (command == "seed") return run_seed(argc - 1, argv + 1);
    if (command == "latency") return run_latency(argc - 1, argv + 1);
    if (command == "overhead") return run_overhead(argc - 1, argv + 1);
    std::fprintf(stderr, "bench_batching: unknown command '%s'\n%s", argv[1], usage);
    return 2;
  } catch (const usage_error& error) {
    std::fprintf(stderr, "bench_batching: %s\n", error.what());
    return 2;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "bench_batching: %s\n", error.what());
    return 1;
  }
}
