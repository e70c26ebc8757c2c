// The scheduling policy the scheduler actor will wrap: who runs in the next engine step and with how many
// tokens, as vLLM V1's Scheduler (core/sched/scheduler.py), simplified. A plain class (STYLE.md #3): no CAF,
// no CUDA, unit-tested synchronously with a fake executor.
//
// Three layers (STYLE.md #1): this class decides who runs and how many tokens; kv_cache_manager answers
// computed_prefix / allocate_slots / free; the block pool below it does the mechanics. When allocate_slots
// says "no room", *this* class picks the victim (the most recently admitted running sequence).
//
// One step is a value (STYLE.md #2): schedule() returns a step_plan, the executor runs it and samples one
// token per chunk that asked for logits, apply(plan, sampled) folds the result back. One plan is in flight
// at a time: call apply() for a plan before the next schedule().
//
// Continuous batching: there is no prefill or decode phase. Every step, each running sequence gets its
// pending tokens (1 for a decode, the rest of the prompt for a prefill, capped by the token budget:
// chunked prefill), then waiting sequences join while seats and budget last. A sequence that finishes
// frees its seat for the next step.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <unordered_map>
#include <vector>

#include "kv_cache_manager.hpp"

namespace inflight {
struct sequence_chunk;
}

namespace inflight::engine {

struct scheduler_config {
  int32_t max_num_seqs = 64;             // running sequences at most
  int32_t max_num_batched_tokens = 512;  // tokens per step at most (decodes + prefill chunks)
  int32_t max_waiting = 1024;            // admission control: a submit beyond this many waiting is refused
  int32_t max_model_len = 8192;          // prompt + max_tokens at most
  bool static_batching = false;          // baseline: admit a new batch only when no sequence runs
};

struct sequence_spec {
  sequence_id id = 0;
  std::vector<int32_t> prompt;
  int32_t max_tokens = 0;
  std::vector<int32_t> stop_token_ids;
  int32_t priority = 0;  // lower runs first; FCFS within a priority
};

enum class submit_status { accepted, queue_full, too_long, empty_prompt, duplicate_id, invalid_max_tokens };
const char* to_string(submit_status status);

// aborted: the KV pool cannot hold the sequence even with every other sequence preempted. submit() refuses
// what exceeds the whole pool, so this only happens when something outside the scheduler holds blocks.
enum class finish_reason { none, stop, length, cancelled, aborted };
const char* to_string(finish_reason reason);

// One sequence's share of a step. Its tokens are plan.token_ids[token_offset, +num_tokens), at positions
// start_position, start_position + 1, ...; its block table is plan.block_ids[block_offset, +num_blocks) and
// covers [0, start_position + num_tokens).
struct scheduled_chunk {
  sequence_id id = 0;
  int32_t start_position = 0;  // tokens already in the sequence's KV cache
  int32_t token_offset = 0, num_tokens = 0;
  int32_t block_offset = 0, num_blocks = 0;
  bool compute_logits = false;  // the chunk completes the sequence's known tokens: sample the next one
};

// One step, as a value: flat arrays, so a plan reused step after step allocates nothing once warm.
struct step_plan {
  uint64_t step = 0;
  std::vector<scheduled_chunk> chunks;  // running sequences in admission order, then newly admitted ones
  std::vector<int32_t> token_ids;
  std::vector<int32_t> block_ids;
  std::vector<sequence_id> preempted;  // preempted while planning this step (back in waiting, KV freed)
  bool empty() const { return chunks.empty(); }
};

// Views for backend::forward; they point into `plan`, which must outlive them. `out` is cleared first.
void to_backend_chunks(const step_plan& plan, std::vector<inflight::sequence_chunk>& out);

struct sequence_event {
  sequence_id id = 0;
  int32_t token = -1;  // the sampled token; -1 for an event without one (cancelled, aborted)
  finish_reason finished = finish_reason::none;
  int32_t prompt_tokens = 0, generated_tokens = 0;
};

struct scheduler_stats {
  int32_t waiting = 0, running = 0;
  int64_t steps = 0;
  int64_t preemptions = 0;
  int64_t prompt_tokens_computed = 0;  // prompt positions run (recomputes after preemption included)
  int64_t generated_tokens = 0;
  int64_t prefix_hit_tokens = 0;       // from the KV manager: prompt tokens skipped thanks to the cache
  int64_t finished = 0, cancelled = 0, aborted = 0;
};

class scheduler {
 public:
  scheduler(const scheduler_config& config, kv_cache_manager& kv);
  ~scheduler();
  scheduler(const scheduler&) = delete;
  scheduler& operator=(const scheduler&) = delete;

  submit_status submit(sequence_spec spec);

  // Cancels a waiting or running sequence: its blocks go back at once. Returns false for an unknown id.
  // Its `cancelled` event is delivered by the next apply() (with any plan, even an empty one), so events
  // come out of one place. A chunk of it still in the plan in flight is ignored by apply().
  bool cancel(sequence_id id);

  // Plans the next step. The returned plan is internal and reused: valid until the next schedule().
  const step_plan& schedule();

  // `sampled`: one token per chunk with compute_logits, in plan order (throws std::invalid_argument on a
  // count mismatch). Appends the tokens, checks stop ids and max_tokens, frees finished sequences, registers
  // computed full blocks in the prefix cache. `events` is cleared, then gets pending cancel/abort events and
  // one event per sampled token (finished ones flagged).
  void apply(const step_plan& plan, std::span<const int32_t> sampled, std::vector<sequence_event>& events);

  scheduler_stats stats() const;
  bool idle() const { return waiting_.empty() && running_.empty(); }

 private:
  struct sequence_state;

  void add_chunk(sequence_state& seq, int32_t num_tokens);
  void preempt(sequence_state& seq);
  void finish_now(sequence_state& seq, finish_reason reason);  // not on the plan path: no chunk in flight
  void insert_waiting(sequence_state* seq, bool at_front_of_priority);

  scheduler_config config_;
  kv_cache_manager& kv_;
  std::unordered_map<sequence_id, std::unique_ptr<sequence_state>> sequences_;
  std::vector<sequence_state*> waiting_;  // (priority, arrival) order; preempted ones first in their priority
  std::vector<sequence_state*> running_;  // admission order: the back is the next preemption victim
  std::vector<sequence_event> pending_events_;  // cancel/abort, delivered by the next apply()
  step_plan plan_;
  uint64_t next_arrival_ = 0;
  scheduler_stats counters_;
};

}  // namespace inflight::engine
