// Runs a set of generation requests to completion on a backend, batching them continuously: every step
// decodes one token for each running sequence and fills the rest of the step's token budget with
// (chunked) prefill of waiting prompts. This synchronous driver is the reference the actor engine's
// outputs are checked against (tests/test_engine.cpp, and tests/test_batch_invariance.cpp for the backend);
// the engine (include/inflight/engine.hpp) is what the CLI and the server run.
//
// Admission is conservative: a sequence is admitted only when the free KV blocks cover its prompt plus
// max_tokens, so nothing ever needs preempting here (the engine's scheduler does preemption).
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "inflight/backend.hpp"
#include "inflight/sampling.hpp"

namespace inflight {

struct generation_request {
  std::vector<int32_t> prompt;
  sampling_params sampling;
  int32_t max_tokens = 128;
  bool ignore_eos = false;
};

enum class finish_reason { stop, length };

struct generation_output {
  std::vector<int32_t> tokens;           // generated ids (an end-of-generation token, if any, is last)
  std::vector<sample_result> logprobs;   // one per token when the request asked for logprobs
  finish_reason reason = finish_reason::length;
};

struct generation_stats {
  int64_t prompt_tokens = 0;
  int64_t generated_tokens = 0;
  int64_t steps = 0;
  double prefill_seconds = 0;  // steps that carried prompt tokens
  double decode_seconds = 0;   // steps that carried only decode tokens
};

struct batch_generator_options {
  int32_t max_batch_sequences = 64;  // clamped to the backend's max_step_sequences()
  int32_t max_step_tokens = 0;  // 0: the backend's limit
};

class batch_generator {
 public:
  // Called for every generated token: (request index, token, its sample). Runs on the calling thread.
  using token_callback = std::function<void(size_t, int32_t, const sample_result&)>;

  // `end_of_generation_ids`: tokens that finish a sequence unless it sets ignore_eos.
  batch_generator(backend& model, std::vector<int32_t> end_of_generation_ids, batch_generator_options options = {});

  // Throws std::invalid_argument when a request can never run (empty prompt, longer than the context or
  // than the whole KV cache, invalid sampling params).
  std::vector<generation_output> run(std::span<const generation_request> requests,
                                     const token_callback& on_token = nullptr);

  const generation_stats& stats() const { return stats_; }

 private:
  backend& backend_;
  std::vector<int32_t> end_of_generation_ids_;
  batch_generator_options options_;
  generation_stats stats_;
};

}  // namespace inflight
