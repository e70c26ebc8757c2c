// Structured output's cost inside continuous batching (not a test): a batch of --batch requests with half
// of them constrained to a JSON Schema, against the same batch all free, run alternately for --rounds
// rounds on one engine; plus what the token masks cost per constrained sample (filling the mask from the
// grammar and applying it to the logits row), from the engine's own counters.
//
//   bench_structured [--batch 16] [--tokens 128] [--prompt-len 32] [--rounds 3] [--threads T]
//                    [--kv-cache-mb 1024] [--model PATH] [--json PATH]
//
// Every request is greedy with random prompt tokens and generates exactly --tokens tokens: the free ones
// with ignore_eos, the constrained ones under a schema whose shortest answer is longer than that (an
// array of at least 64 small objects), so that they end by length too and both batches compute the same
// number of tokens. Each constrained output is checked to be a prefix of valid JSON for the schema's shape
// (it starts with `[{"id": `); the engine's tests check full validity.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "atomic_file.hpp"
#include "cli_options.hpp"
#include "inflight/chat_template.hpp"
#include "inflight/cpu_backend.hpp"
#include "inflight/engine.hpp"
#include "inflight/gguf.hpp"
#include "inflight/tokenizer.hpp"

using namespace inflight;
using cli::usage_error;

namespace {

constexpr const char* usage =
    "usage: bench_structured [--batch 16] [--tokens 128] [--prompt-len 32] [--rounds 3] [--threads T]\n"
    "                        [--kv-cache-mb 1024] [--model PATH] [--json PATH]\n";

// At least 64 items of at least ~9 tokens: never complete within a few hundred tokens.
constexpr const char* long_schema = R"({
  "type": "array", "minItems": 64,
  "items": {"type": "object", "properties": {"id": {"type": "integer", "minimum": 0, "maximum": 999},
                                             "ok": {"type": "boolean"}},
            "required": ["id", "ok"]}
})";

struct options {
  int32_t batch = 16, tokens = 128, prompt_len = 32, rounds = 3, threads = 0;
  int64_t kv_cache_mb = 1024;
  std::string model = INFLIGHT_DEFAULT_MODEL, json;
};

options parse(int argc, char** argv) {
  options o;
  cli::option_reader reader(argc, argv);
  while (!reader.done()) {
    const std::string name = reader.next_name();
    if (name == "batch") o.batch = int32_t(reader.int_value(2, 256));
    else if (name == "tokens") o.tokens = int32_t(reader.int_value(1, 4096));
    else if (name == "prompt-len") o.prompt_len = int32_t(reader.int_value(1, 4096));
    else if (name == "rounds") o.rounds = int32_t(reader.int_value(1, 100));
    else if (name == "threads") o.threads = int32_t(reader.int_value(0, 1024));
    else if (name == "kv-cache-mb") o.kv_cache_mb = reader.int_value(16, 1 << 20);
    else if (name == "model") o.model = reader.string_value();
    else if (name == "json") o.json = reader.string_value();
    else throw usage_error("unknown option --" + name);
  }
  return o;
}

// Counts a request's tokens and keeps its text; the engine calls it from its threads, the benchmark reads
// it after wait_idle().
class counting_sink final : public generation_sink {
 public:
  void on_delta(const generation_delta& delta) override {
    if (delta.token >= 0) ++tokens;
    text += delta.text;
  }
  void on_final(const generation_final& final_event) override { result = final_event; }
  int32_t tokens = 0;
  std::string text;
  generation_final result;
};

struct batch_run {
  double seconds = 0;
  int64_t tokens = 0;
  double constraint_seconds = 0;  // the engine's mask time in this run
  int64_t constrained_samples = 0;
  double tokens_per_second() const { return seconds > 0 ? double(tokens) / seconds : 0; }
};

batch_run run_batch(inference_engine& eng, const std::vector<generation_params>& requests) {
  const engine_stats before = eng.stats();
  std::vector<std::shared_ptr<counting_sink>> sinks;
  const auto start = std::chrono::steady_clock::now();
  for (const generation_params& params : requests) {
    sinks.push_back(std::make_shared<counting_sink>());
    eng.submit(params, sinks.back());
  }
  eng.wait_idle();
  batch_run run;
  run.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const engine_stats after = eng.stats();
  run.constraint_seconds = after.constraint_seconds - before.constraint_seconds;
  run.constrained_samples = after.constrained_samples - before.constrained_samples;
  for (size_t i = 0; i < sinks.size(); ++i) {
    const counting_sink& sink = *sinks[i];
    if (sink.result.reason != engine::finish_reason::length || sink.tokens != requests[i].max_tokens)
      throw std::runtime_error("request " + std::to_string(i) + " ended with " + to_string(sink.result.reason) +
                               " after " + std::to_string(sink.tokens) + " tokens: " + sink.result.message);
    if (requests[i].constraint.active() && sink.text.rfind("[{\"id\": ", 0) != 0)
      throw std::runtime_error("a constrained output does not start as the schema says: " + sink.text.substr(0, 40));
    run.tokens += sink.tokens;
  }
  return run;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const options o = parse(argc, argv);
    auto file = gguf::gguf_file::open(o.model);
    auto tok = tokenizer::from_gguf(*file);
    cpu_backend_options backend;
    backend.num_threads = o.threads;
    backend.kv_cache_bytes = size_t(o.kv_cache_mb) << 20;
    backend.max_step_sequences = std::max(o.batch, 64);
    engine_options engine;
    engine.max_num_seqs = o.batch;
    auto eng = inference_engine::create(std::make_unique<cpu_backend>(file, backend), tok, chat_template::from_gguf(*file), engine);

    std::mt19937 rng(7);
    std::uniform_int_distribution<int32_t> token(1000, 19999);
    std::vector<generation_params> free_batch, mixed_batch;
    for (int32_t i = 0; i < o.batch; ++i) {
      generation_params params;
      params.prompt_tokens.resize(size_t(o.prompt_len));
      for (int32_t& id : params.prompt_tokens) id = token(rng);
      params.sampling.temperature = 0;
      params.max_tokens = o.tokens;
      params.ignore_eos = true;
      free_batch.push_back(params);
      if (i % 2 == 1) {  // every other one constrained
        params.ignore_eos = false;
        params.constraint = {output_constraint::kind::json_schema, long_schema};
      }
      mixed_batch.push_back(params);
    }
    run_batch(*eng, {free_batch.front()});  // warm-up: the first step's allocations, the grammar's compile
    run_batch(*eng, {mixed_batch[1]});

    std::vector<batch_run> free_runs, mixed_runs;
    for (int32_t round = 0; round < o.rounds; ++round) {
      free_runs.push_back(run_batch(*eng, free_batch));
      mixed_runs.push_back(run_batch(*eng, mixed_batch));
      std::fprintf(stderr, "round %d/%d: all free %.1f tokens/s, half constrained %.1f tokens/s\n", round + 1,
                   o.rounds, free_runs.back().tokens_per_second(), mixed_runs.back().tokens_per_second());
    }
    const auto median = [](std::vector<double> values) {
      std::sort(values.begin(), values.end());
      return values[values.size() / 2];
    };
    std::vector<double> free_rates, mixed_rates, ratios, mask_us;
    for (int32_t r = 0; r < o.rounds; ++r) {
      free_rates.push_back(free_runs[size_t(r)].tokens_per_second());
      mixed_rates.push_back(mixed_runs[size_t(r)].tokens_per_second());
      ratios.push_back(mixed_rates.back() / free_rates.back());
      mask_us.push_back(1e6 * mixed_runs[size_t(r)].constraint_seconds /
                        double(std::max<int64_t>(1, mixed_runs[size_t(r)].constrained_samples)));
    }
    const double step_ms = 1e3 * median([&] {
      std::vector<double> v;
      for (const batch_run& run : free_runs) v.push_back(run.seconds / o.tokens);
      return v;
    }());
    std::printf("batch %d, %d tokens each, %d rounds (medians): all free %.1f tokens/s, half constrained %.1f tokens/s, "
                "ratio %.3f; mask %.1f us per constrained sample (a step of the free batch: %.2f ms)\n",
                o.batch, o.tokens, o.rounds, median(free_rates), median(mixed_rates), median(ratios), median(mask_us), step_ms);
    if (!o.json.empty()) {
      std::string out = "{\"batch\": " + std::to_string(o.batch) + ", \"tokens\": " + std::to_string(o.tokens) +
                        ", \"rounds\": [";
      for (int32_t r = 0; r < o.rounds; ++r) {
        out += (r ? ", " : "") + std::string("{\"free_tokens_per_s\": ") + std::to_string(free_rates[size_t(r)]) +
               ", \"mixed_tokens_per_s\": " + std::to_string(mixed_rates[size_t(r)]) +
               ", \"mask_us_per_sample\": " + std::to_string(mask_us[size_t(r)]) + "}";
      }
      out += "]}\n";
      cli::write_file_atomically(o.json, out);
    }
    return 0;
  } catch (const usage_error& error) {
    std::fprintf(stderr, "bench_structured: %s\n%s", error.what(), usage);
    return 2;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "bench_structured: %s\n", error.what());
    return 1;
  }
}
