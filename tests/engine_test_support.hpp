// What the engine suites share (test_engine, test_structured_output): the real model, engines and backends
// of chosen shapes, a sink that collects a request's events, and the reference of a request run alone.
#pragma once

#include <doctest/doctest.h>

#include <atomic>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "inflight/batch_generator.hpp"
#include "inflight/cpu_backend.hpp"
#include "inflight/engine.hpp"
#include "inflight/gguf.hpp"
#include "inflight/tokenizer.hpp"

namespace inflight::test {

struct model_files {
  std::shared_ptr<const gguf::gguf_file> file = gguf::gguf_file::open(INFLIGHT_DEFAULT_MODEL);
  std::shared_ptr<const tokenizer> tok = tokenizer::from_gguf(*file);
};

inline const model_files& model() {
  static const model_files files;
  return files;
}

struct backend_shape {
  int32_t max_step_sequences = 64;
  int32_t num_blocks = 0;  // 0: 256 MiB worth
  int32_t block_size = 16;
};

inline std::unique_ptr<cpu_backend> make_backend(const backend_shape& shape = {}) {
  cpu_backend_options options;
  options.max_step_tokens = 512;
  options.max_step_sequences = shape.max_step_sequences;
  options.block_size = shape.block_size;
  options.num_blocks = shape.num_blocks;
  return std::make_unique<cpu_backend>(model().file, options);
}

inline std::unique_ptr<inference_engine> make_engine(const engine_options& options = {}, const backend_shape& shape = {}) {
  return inference_engine::create(make_backend(shape), model().tok, chat_template::from_gguf(*model().file), options);
}

// Everything one request produced. The engine calls it from its threads; the test reads it after
// wait_idle(), which happens after the final event.
class collecting_sink final : public generation_sink {
 public:
  void on_delta(const generation_delta& delta) override {
    if (delta.token >= 0) {
      tokens.push_back(delta.token);
      if (delta.has_sample) samples.push_back(delta.sample);
      if (on_token) on_token(int32_t(tokens.size()));
    }
    text += delta.text;
  }
  void on_final(const generation_final& final_event) override {
    CHECK_FALSE(finals.load());  // exactly once
    result = final_event;
    finals.store(true);
  }

  std::vector<int32_t> tokens;
  std::vector<sample_result> samples;
  std::string text;
  generation_final result;
  std::atomic<bool> finals{false};
  std::function<void(int32_t)> on_token;  // after each token delta (e.g. to cancel mid-decode)
};

inline generation_params greedy(std::vector<int32_t> prompt, int32_t max_tokens, bool ignore_eos = true) {
  generation_params params;
  params.prompt_tokens = std::move(prompt);
  params.sampling.temperature = 0;
  params.max_tokens = max_tokens;
  params.ignore_eos = ignore_eos;
  return params;
}

inline std::vector<int32_t> random_prompt(std::mt19937& rng, int32_t length) {
  std::uniform_int_distribution<int32_t> token(1000, 20000);
  std::vector<int32_t> prompt(static_cast<size_t>(length));
  for (int32_t& id : prompt) id = token(rng);
  return prompt;
}

// The request's greedy tokens when it runs alone, through the synchronous driver.
inline std::vector<int32_t> run_alone(const generation_params& params) {
  auto backend = make_backend({.max_step_sequences = 1});
  batch_generator generator(*backend, model().tok->end_of_generation_ids());
  generation_request request;
  request.prompt = params.prompt_tokens.empty() ? model().tok->encode(params.prompt, true) : params.prompt_tokens;
  request.sampling = params.sampling;
  request.max_tokens = params.max_tokens;
  request.ignore_eos = params.ignore_eos;
  return generator.run({&request, 1})[0].tokens;
}

// Submits every request at once, waits for all, returns their sinks.
inline std::vector<std::shared_ptr<collecting_sink>> run_all(inference_engine& eng, const std::vector<generation_params>& requests) {
  std::vector<std::shared_ptr<collecting_sink>> sinks;
  for (const auto& params : requests) {
    sinks.push_back(std::make_shared<collecting_sink>());
    eng.submit(params, sinks.back());
  }
  eng.wait_idle();
  for (const auto& sink : sinks) REQUIRE(sink->finals.load());
  return sinks;
}

// No request left behind and every KV block back in the pool (free, or cached for a later prefix hit).
inline void check_drained(inference_engine& eng) {
  const engine_stats stats = eng.stats();
  CHECK(stats.running == 0);
  CHECK(stats.waiting == 0);
  CHECK(stats.kv_blocks_used == 0);
  CHECK(stats.kv_blocks_free + stats.kv_blocks_cached == stats.kv_blocks_total);
}

}  // namespace inflight::test
