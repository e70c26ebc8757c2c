// The values the engine's actors exchange (ARCHITECTURE.md, "Actors and what each owns"):
//
//   scheduler ──kv_updates, step_request──▶ kv_manager ──step_plan──▶ scheduler ──step_plan──▶ executor
//   executor ──step_result──▶ scheduler ──token events──▶ request actors
//
// Plain structs with no CAF in sight, so the CAF-free classes behind the actors (actors/scheduling_policy,
// actors/kv_step_planner) and their unit tests use them directly; engine_protocol_inspect.hpp adds the
// 0.17-style `inspect` overloads that let CAF carry them, included only by the actor translation units.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "inflight/output_constraint.hpp"
#include "inflight/sampling.hpp"

namespace inflight::engine {

using sequence_id = uint64_t;

// aborted: the KV pool cannot hold the sequence even with every other sequence preempted (only possible
// when something outside the scheduler holds blocks). error: the request failed before or while running
// (bad input, backend failure); the event's message says why.
enum class finish_reason : uint8_t { none, stop, length, cancelled, aborted, deadline, error };
const char* to_string(finish_reason reason);

// One sequence's share of a step. Its tokens are plan.token_ids[token_offset, +num_tokens), at positions
// start_position, start_position + 1, ...; its block table is plan.block_ids[block_offset, +num_blocks) and
// covers [0, start_position + num_tokens).
constexpr int32_t placeholder_token = -1;

struct scheduled_chunk {
  sequence_id id = 0;
  int32_t start_position = 0;  // tokens already in the sequence's KV cache
  int32_t token_offset = 0, num_tokens = 0;
  int32_t block_offset = 0, num_blocks = 0;
  bool compute_logits = false;  // the chunk completes the sequence's known tokens: sample the next one
};

// One step, as a value: flat arrays, so a plan reused step after step allocates nothing once warm.
// A token id of -1 (placeholder_token) stands for the token the executor samples for that sequence in the
// step before: the plan was made while that step ran (see step_request::speculative).
// Built by the KV manager (it owns the block tables and the token log), folded in by the scheduler,
// run by the executor.
struct step_plan {
  uint64_t step = 0;
  std::vector<scheduled_chunk> chunks;  // running sequences in admission order, then newly admitted ones
  std::vector<int32_t> token_ids;
  std::vector<int32_t> block_ids;
  std::vector<sequence_id> admitted;   // moved from waiting to running by this plan, in order
  std::vector<sequence_id> preempted;  // preempted while planning this step (back in waiting, KV freed)
  std::vector<sequence_id> aborted;    // could not be given room even alone: finished, KV freed
  bool deferred = false;  // a speculative request that would need a preemption: nothing planned, ask again
                          // once the step in flight is back
  bool empty() const { return chunks.empty(); }
};

// A sequence the KV manager has not seen yet: its tokens (the prompt) and the most it may grow to.
struct kv_new_sequence {
  sequence_id id = 0;
  std::vector<int32_t> tokens;
  int32_t max_tokens = 0;
};

// What changed since the KV manager last heard, applied in this order: the sampled tokens of the plan
// `sampled_step` (one per chunk with logits, in plan order) are appended to the token logs and the blocks
// they completed enter the prefix cache; released sequences (finished, cancelled) give their blocks back;
// new sequences are registered.
struct kv_updates {
  uint64_t sampled_step = 0;  // 0: no sampled tokens
  std::vector<int32_t> sampled;
  std::vector<sequence_id> released;
  std::vector<kv_new_sequence> added;
  bool empty() const { return sampled_step == 0 && released.empty() && added.empty(); }
  void clear() {
    sampled_step = 0;
    sampled.clear();
    released.clear();
    added.clear();
  }
};

// The scheduler's decision for the next step: who may run, in which order, within which budgets. The KV
// manager turns it into a step_plan: it allocates blocks for `running` in order (preempting from the back
// when the pool is short), then admits from `waiting` in order while seats, budget and blocks last.
struct step_request {
  int32_t token_budget = 0;   // tokens in the step at most (decodes + prefill chunks)
  int32_t max_running = 0;    // running sequences at most
  bool may_admit = true;      // false: run only `running` (static batching with a batch in progress)
  // Planned while the previous step still runs (pipelining): its sampled tokens are not known yet, so
  // decode chunks carry placeholders, and no one may be preempted (their blocks are being written); if
  // the pool is short the plan comes back deferred.
  bool speculative = false;
  std::vector<sequence_id> running;  // admission order: the back is the first preemption victim
  std::vector<sequence_id> waiting;  // admission candidates, best first
};

struct sequence_spec {
  sequence_id id = 0;
  std::vector<int32_t> prompt;
  int32_t max_tokens = 0;
  std::vector<int32_t> stop_token_ids;
  int32_t priority = 0;  // lower runs first; FCFS within a priority
};

// unavailable: the engine failed (its KV manager or executor is gone) and takes no more work, or the sender
// is on a node this engine does not admit (an engine node's unauthenticated peer). draining: an engine node
// that is leaving takes no new sequences (a gateway routes the request elsewhere).
enum class submit_status { accepted, queue_full, too_long, empty_prompt, duplicate_id, invalid_max_tokens, unavailable, draining };
const char* to_string(submit_status status);

struct sequence_event {
  sequence_id id = 0;
  int32_t token = -1;  // the sampled token; -1 for an event without one (cancelled, aborted)
  finish_reason finished = finish_reason::none;
  int32_t prompt_tokens = 0, generated_tokens = 0;
};

// The scheduler's event for a sequence, carried to its request actor: one per sampled token, plus one
// without a token for a sequence ended from outside (cancel, abort, error). `sample` holds the token's
// log-probabilities when the request asked for them (has_sample).
struct token_event {
  sequence_event event;
  bool has_sample = false;
  sample_result sample;
  std::string error;  // finish_reason::error: what failed
};

// request actor -> scheduler: a tokenized request. The scheduler answers with a submit_status (as int32_t)
// and, when accepted, sends token_events to the submitting actor until one is final.
struct sequence_submit {
  sequence_spec spec;
  sampling_params sampling;
  output_constraint constraint;  // structured output, as the request gave it (the executor compiles it)
};

// scheduler -> executor: a sequence's sampler (params, seed, the prompt for the repetition penalty) before
// its first step; sampler_release after its last.
struct sampler_setup {
  sequence_id id = 0;
  sampling_params sampling;
  std::vector<int32_t> prompt;
  output_constraint constraint;
};

// A sequence the executor could not sample in a step, though the step itself ran (its constraint would not
// compile, or allowed no token): the scheduler ends it with an error, the others go on.
struct sequence_failure {
  sequence_id id = 0;
  std::string message;
};

// What the executor sends back for one plan: one sampled token per chunk with logits, in plan order.
struct step_result {
  uint64_t step = 0;
  std::vector<int32_t> sampled;
  std::vector<sample_result> samples;  // parallel to `sampled` when any sequence asked for logprobs, else empty
  double forward_seconds = 0;          // backend forward pass
  double sampling_seconds = 0;         // logits -> tokens
  double constraint_seconds = 0;       // of which structured output's token masks (fill and apply)
  int32_t constrained_samples = 0;     // rows sampled under a constraint
  std::string error;                   // non-empty: the step failed; every sequence in it is failed
  std::vector<sequence_failure> failed;  // sequences failed alone (their `sampled` entry is -1)
};

}  // namespace inflight::engine
