// The scheduler actor's plain class: who waits, who runs, who is next, and when a sequence is done. As
// vLLM V1's Scheduler, minus the block bookkeeping, which lives with the KV manager (kv_step_planner): no
// CAF, no CUDA, unit-tested synchronously.
//
// Per step (actors/scheduler.hpp shows the same loop without actors):
//   propose(request)   the order to run and admit in, and the budgets          ──▶ KV manager
//   on_plan(plan)      the KV manager's answer: who was admitted, preempted, aborted
//   apply(plan, ...)   the executor's sampled tokens: stop ids, max_tokens, events for the request actors
// Everything the KV manager must hear (prompts of new sequences, sampled tokens, released sequences)
// accumulates in updates() and is handed over with take_updates().
//
// Continuous batching: there is no prefill or decode phase. Every step each running sequence gets its
// pending tokens (1 for a decode, the rest of the prompt for a prefill, capped by the token budget:
// chunked prefill), then waiting sequences join while seats and budget last. A sequence that finishes frees
// its seat for the next step.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <unordered_map>
#include <vector>

#include "inflight/bucket_histogram.hpp"
#include "inflight/engine_protocol.hpp"

namespace inflight::engine {

struct scheduler_config {
  int32_t max_num_seqs = 64;             // running sequences at most
  int32_t max_num_batched_tokens = 512;  // tokens per step at most (decodes + prefill chunks)
  int32_t max_waiting = 1024;            // admission control: a submit beyond this many waiting is refused
  int32_t max_model_len = 8192;          // prompt + max_tokens at most
  // Static batching, the baseline continuous batching is measured against (a Hugging Face pipeline): a
  // batch forms when the engine is empty and max_num_seqs requests wait, or the oldest has waited
  // static_batch_window; it runs until its longest member finishes. A member that finishes earlier gets
  // its final event at once but keeps its seat and its compute (padding) until the batch ends.
  bool static_batching = false;
  std::chrono::milliseconds static_batch_window{50};
};

struct scheduler_stats {
  int32_t waiting = 0, running = 0;
  int64_t steps = 0;
  int64_t preemptions = 0;
  int64_t prompt_tokens_computed = 0;  // prompt positions run (recomputes after preemption included)
  int64_t generated_tokens = 0;
  int64_t prefix_hit_tokens = 0;       // prompt tokens skipped thanks to the prefix cache
  int64_t finished = 0, cancelled = 0, aborted = 0;
  // Seconds from submit to the first admission into the running batch (a preempted sequence's return does
  // not count again), and sequences per applied step (padding included: it costs compute).
  bucket_histogram queue_time_seconds{{0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}};
  bucket_histogram step_batch_size{{1, 2, 4, 8, 16, 32, 64, 128, 256, 512}};
};

class scheduling_policy {
 public:
  // `kv_block_size`, `kv_num_blocks`: the pool's shape, to refuse a sequence the pool could never hold.
  scheduling_policy(const scheduler_config& config, int32_t kv_block_size, int32_t kv_num_blocks);
  ~scheduling_policy();
  scheduling_policy(const scheduling_policy&) = delete;
  scheduling_policy& operator=(const scheduling_policy&) = delete;

  using clock = std::chrono::steady_clock;

  submit_status submit(sequence_spec spec, clock::time_point now = clock::now());

  // Cancels a waiting or running sequence; its blocks are released through updates(). Returns false for an
  // unknown id. Its `cancelled` event comes out of the next apply() or take_events(), so events come out of
  // one place; a chunk of it still in the plan in flight is ignored by apply().
  bool cancel(sequence_id id) { return end(id, finish_reason::cancelled); }
  // The same for another reason from outside the step loop (error: the executor failed its step).
  bool end(sequence_id id, finish_reason reason);

  // The next step's request (reused: valid until the next propose()). Empty `running` and `waiting` mean
  // there is nothing to plan.
  // `speculative`: planned while the previous step still runs (the scheduler actor pipelines); sequences
  // whose token in flight will be their last (max_tokens) are left out.
  const step_request& propose(clock::time_point now = clock::now(), bool speculative = false);

  // Static batching only: how long until a new batch may form (zero when it may now, or when a batch is
  // running or nothing waits). A caller with nothing else to run should look again after this long.
  clock::duration batch_formation_delay(clock::time_point now = clock::now()) const;

  // Folds in the KV manager's plan for the last propose(): admissions, preemptions, aborts (their events
  // are queued for the next apply() / take_events()).
  // `now` times the admissions for stats().queue_time_seconds.
  void on_plan(const step_plan& plan, clock::time_point now = clock::now());

  // `sampled`: one token per chunk with compute_logits, in plan order (throws std::invalid_argument on a
  // count mismatch). Checks stop ids and max_tokens. `events` is cleared, then gets queued cancel/abort
  // events and one event per sampled token (finished ones flagged). The tokens and the finished sequences
  // go to updates() for the KV manager.
  void apply(const step_plan& plan, std::span<const int32_t> sampled, std::vector<sequence_event>& events);

  // Queued events (cancellations, aborts) when no step is coming to carry them; `events` is cleared first.
  void take_events(std::vector<sequence_event>& events);
  bool has_events() const { return !pending_events_.empty(); }

  // For the KV manager. take_updates() swaps them into `out` (cleared first), leaving this side empty.
  const kv_updates& updates() const { return updates_; }
  void take_updates(kv_updates& out);

  // Counters of this side (steps, preemptions, prompt tokens and prefix hits are the KV manager's).
  scheduler_stats stats() const;
  bool idle() const { return waiting_.empty() && running_.empty(); }

 private:
  struct sequence_state;

  void finish_now(sequence_state& seq, finish_reason reason);
  void insert_waiting(sequence_state* seq, bool at_front_of_priority);
  void release_padding();
  sequence_state* find(sequence_id id);

  scheduler_config config_;
  int32_t kv_block_size_ = 0, kv_num_blocks_ = 0;
  std::unordered_map<sequence_id, std::unique_ptr<sequence_state>> sequences_;
  std::vector<sequence_state*> waiting_;  // (priority, arrival) order; preempted ones first in their priority
  std::vector<sequence_state*> running_;  // admission order: the back is the next preemption victim
  std::vector<sequence_event> pending_events_;  // cancel/abort, delivered by the next apply()
  step_request request_;
  kv_updates updates_;
  uint64_t next_arrival_ = 0;
  int32_t num_padding_ = 0;  // static batching: running members that finished and pad until the batch ends
  scheduler_stats counters_;
};

}  // namespace inflight::engine
