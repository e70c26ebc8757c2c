// The executor actor: owns the backend (weights, KV memory) and one sampler per sequence, and runs one
// step per message on a thread of its own (detached), so a forward pass never occupies one of CAF's
// worker threads. The samplers are host `sampler`s, or, for a backend that samples on its device (CUDA),
// the backend's own (backend::samples_on_device). Messages, all from the scheduler and handled in order:
//   sampler_setup  a sequence's sampling params and prompt (its sampler is built on its first step), and
//                  its output constraint (structured output), which starts compiling on a thread of its own
//   release_atom   the sequence is done: drop its sampler
//   step_plan      run the step, answer with a step_result
// A constrained sequence's logits row is narrowed to what its constraint allows next before the sampler
// draws (host sampling only: a backend that samples on its device takes no token masks yet).
#include <caf/all.hpp>

#include <chrono>
#include <exception>
#include <future>
#include <optional>
#include <unordered_map>

#include "engine_actors.hpp"
#include "inflight/backend.hpp"
#include "scheduler.hpp"

namespace inflight::engine {

namespace {

struct sequence_sampling {
  sampler_setup setup;
  std::unique_ptr<sampler> sampler_;  // built lazily: a waiting sequence costs no vocabulary-sized scratch
  bool on_device = false;             // the backend holds its sampler (added lazily too)
  int32_t last_sampled = 0;           // what a placeholder in the next plan stands for
  // Structured output: the compiled constraint (usually found in the compiler's cache, where the request
  // actor left it; an engine node compiles it while the prompt is prefilled), and the sequence's matcher,
  // built at its first sample.
  std::shared_future<std::shared_ptr<const compiled_constraint>> compiling;
  std::optional<constraint_matcher> matcher;
  bool failed = false;  // reported in a step_result.failed: never sampled again
};

struct executor_state {
  std::shared_ptr<backend> model;
  std::shared_ptr<const constraint_compiler> constraints;
  std::vector<uint32_t> token_mask;         // one row, reused
  bool device_sampling = false;             // model->samples_on_device()
  std::unordered_map<sequence_id, sequence_sampling> sequences;
  std::vector<float> logits;                // max_step_sequences x vocab_size, sized once (host sampling)
  std::vector<uint64_t> row_samplers;       // device sampling: each logits row's sampler (0: none)
  std::vector<sample_result> row_samples;   // device sampling: each row's result
  std::vector<inflight::sequence_chunk> chunks;  // views into the plan, reused
  static inline const char* name = "inflight.executor";
};

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// A plan made while the step before ran carries placeholders for the tokens that step sampled: this
// executor sampled them, so it fills them in. (A sequence it has no sampler for was cancelled meanwhile;
// its output is discarded, any valid id will do.)
void fill_placeholders(executor_state& st, step_plan& plan) {
  for (const scheduled_chunk& chunk : plan.chunks) {
    for (int32_t i = 0; i < chunk.num_tokens; ++i) {
      int32_t& token = plan.token_ids[size_t(chunk.token_offset + i)];
      if (token != placeholder_token) continue;
      const auto found = st.sequences.find(chunk.id);
      token = found != st.sequences.end() ? found->second.last_sampled : 0;
    }
  }
}

// Device sampling: each logits row's sampler id, adding the samplers of sequences sampled for the first time.
void prepare_device_samplers(executor_state& st, const step_plan& plan) {
  st.row_samplers.clear();
  for (const scheduled_chunk& chunk : plan.chunks) {
    if (!chunk.compute_logits) continue;
    const auto found = st.sequences.find(chunk.id);
    if (found == st.sequences.end()) {  // cancelled meanwhile: computed, not sampled
      st.row_samplers.push_back(0);
      continue;
    }
    sequence_sampling& seq = found->second;
    if (!seq.on_device) {
      st.model->add_sampler(chunk.id, seq.setup.sampling, seq.setup.prompt);
      seq.on_device = true;
      seq.setup.prompt = {};
    }
    st.row_samplers.push_back(chunk.id);
  }
  st.row_samples.resize(st.row_samplers.size());
}

// Narrows one logits row to the tokens the sequence's constraint allows next. Returns what went wrong when
// the sequence cannot be sampled.
std::string constrain(executor_state& st, sequence_sampling& seq, std::span<float> logits) {
  if (st.device_sampling) return "structured output is not supported by this backend (it samples on its device)";
  try {
    if (!seq.matcher) seq.matcher.emplace(seq.compiling.get());
    // Terminated: the output ended (an end token was accepted) and static batching computes this row as
    // padding, whose tokens are discarded.
    if (!seq.matcher->is_terminated() && seq.matcher->fill_next_token_mask(st.token_mask))
      apply_token_mask(logits, st.token_mask);
  } catch (const std::exception& error) {
    return error.what();
  }
  return {};
}

step_result run_step(executor_state& st, step_plan& plan) {
  step_result result;
  result.step = plan.step;
  const int32_t vocab = st.model->config().vocab_size;
  try {
    fill_placeholders(st, plan);
    to_backend_chunks(plan, st.chunks);
    if (st.device_sampling) prepare_device_samplers(st, plan);
    const auto forward_start = std::chrono::steady_clock::now();
    if (st.device_sampling)
      st.model->forward_and_sample(st.chunks, st.row_samplers, st.row_samples);
    else
      st.model->forward(st.chunks, st.logits);
    result.forward_seconds = seconds_since(forward_start);  // device sampling: sampling included

    const auto sampling_start = std::chrono::steady_clock::now();
    size_t row = 0;
    bool collecting_samples = false;
    for (const scheduled_chunk& chunk : plan.chunks) {
      if (!chunk.compute_logits) continue;
      const auto found = st.sequences.find(chunk.id);
      if (found == st.sequences.end()) {
        // Cancelled after the KV manager planned this step (its release overtook the plan): the
        // scheduler and the KV manager discard whatever comes back for it, so nothing is sampled.
        ++row;
        result.sampled.push_back(-1);
        if (collecting_samples) result.samples.emplace_back();
        continue;
      }
      sequence_sampling& seq = found->second;
      if (!st.device_sampling && !seq.sampler_) {
        seq.sampler_ = std::make_unique<sampler>(seq.setup.sampling, vocab);
        seq.sampler_->set_prompt(seq.setup.prompt);
        seq.setup.prompt = {};
      }
      float* const logits = st.device_sampling ? nullptr : st.logits.data() + row * size_t(vocab);
      std::string failure;
      if (seq.failed) failure = "failed in an earlier step";
      else if (seq.setup.constraint.active()) {
        const auto constraint_start = std::chrono::steady_clock::now();
        failure = constrain(st, seq, {logits, size_t(vocab)});
        result.constraint_seconds += seconds_since(constraint_start);
        ++result.constrained_samples;
      }
      sample_result sample;
      if (failure.empty()) sample = st.device_sampling ? st.row_samples[row] : seq.sampler_->sample(logits);
      ++row;
      // A token the constraint refuses can only be drawn when it allowed none with a finite logit.
      if (failure.empty() && seq.matcher && !seq.matcher->is_terminated() && !seq.matcher->accept(sample.token))
        failure = "the output constraint allowed no token the model could produce";
      if (!failure.empty()) {
        if (!seq.failed) result.failed.push_back({chunk.id, std::move(failure)});
        seq.failed = true;
        result.sampled.push_back(-1);
        if (collecting_samples) result.samples.emplace_back();
        continue;
      }
      seq.last_sampled = sample.token;
      result.sampled.push_back(sample.token);
      // Samples (~170 bytes each) travel only in steps where someone asked for logprobs: the list starts
      // with the first such sequence, padded for the rows before it, and stays parallel to `sampled`; rows
      // of sequences that did not ask hold an empty sample (token -1).
      const bool wants_sample = seq.setup.sampling.logprobs || seq.setup.sampling.top_logprobs > 0;
      if (wants_sample && !collecting_samples) {
        result.samples.resize(result.sampled.size() - 1);
        collecting_samples = true;
      }
      if (collecting_samples) result.samples.push_back(wants_sample ? sample : sample_result{});  // token -1: none
    }
    result.sampling_seconds = seconds_since(sampling_start);
  } catch (const std::exception& error) {
    // A malformed step is a bug upstream and an allocation failure is fatal to this step only: either
    // way the scheduler fails the step's sequences and carries on.
    result.sampled.clear();
    result.samples.clear();
    result.error = error.what();
  }
  return result;
}

caf::behavior executor(caf::stateful_actor<executor_state>* self, std::shared_ptr<backend> model,
                       std::shared_ptr<const constraint_compiler> constraints) {
  executor_state& st = self->state;
  st.model = std::move(model);
  st.constraints = std::move(constraints);
  st.token_mask.resize(size_t(st.constraints->mask_words()));
  st.device_sampling = st.model->samples_on_device();
  if (!st.device_sampling)
    st.logits.resize(size_t(st.model->max_step_sequences()) * size_t(st.model->config().vocab_size));
  st.row_samplers.reserve(size_t(st.model->max_step_sequences()));
  st.row_samples.reserve(size_t(st.model->max_step_sequences()));
  return {
      [self](sampler_setup& setup) {
        const sequence_id id = setup.id;
        sequence_sampling seq{std::move(setup), nullptr};
        if (seq.setup.constraint.active()) {
          // Off this thread: a constraint not in the cache takes milliseconds to seconds to compile, which
          // the step loop must not wait for; its first sample waits only for what is left.
          seq.compiling = std::async(std::launch::async, [compiler = self->state.constraints, spec = seq.setup.constraint] {
                            return compiler->compile(spec);
                          }).share();
        }
        self->state.sequences[id] = std::move(seq);
      },
      [self](release_atom, sequence_id id) {
        executor_state& st = self->state;
        const auto found = st.sequences.find(id);
        if (found == st.sequences.end()) return;
        if (found->second.on_device) st.model->remove_sampler(id);
        st.sequences.erase(found);
      },
      [self](step_plan& plan) -> step_result { return run_step(self->state, plan); },
  };
}

}  // namespace

caf::actor spawn_executor(caf::actor_system& system, std::shared_ptr<backend> model,
                          std::shared_ptr<const constraint_compiler> constraints) {
  return system.spawn<caf::detached>(executor, std::move(model), std::move(constraints));
}

}  // namespace inflight::engine
