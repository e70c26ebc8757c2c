// The engine's step loop without actors: the scheduling policy (scheduler actor) and the KV step planner
// (KV manager actor) composed synchronously over one kv_cache_manager, exactly as the actors exchange
// messages, minus the mailboxes. Unit tests drive it with a fake executor; the actor shells
// (actors/*_actor.cpp) make the same calls in the same order.
//
//   schedule():  policy.propose() ──▶ planner.plan() ──▶ policy.on_plan()       = the next step_plan
//   apply():     policy.apply(sampled) ──▶ planner.update(policy's updates)     = the step's events
//
// One plan is in flight at a time: call apply() for a plan before the next schedule().
#pragma once

#include <span>
#include <vector>

#include "inflight/engine_protocol.hpp"
#include "kv_cache_manager.hpp"
#include "kv_step_planner.hpp"
#include "scheduling_policy.hpp"

namespace inflight {
struct sequence_chunk;
}

namespace inflight::engine {

// Views for backend::forward; they point into `plan`, which must outlive them. `out` is cleared first.
void to_backend_chunks(const step_plan& plan, std::vector<inflight::sequence_chunk>& out);

class scheduler {
 public:
  scheduler(const scheduler_config& config, kv_cache_manager& kv);

  submit_status submit(sequence_spec spec);
  // Cancels a waiting or running sequence: its blocks go back at once; its `cancelled` event comes out of
  // the next apply(). Returns false for an unknown id.
  bool cancel(sequence_id id);
  // Plans the next step. The returned plan is internal and reused: valid until the next schedule().
  const step_plan& schedule();
  void apply(const step_plan& plan, std::span<const int32_t> sampled, std::vector<sequence_event>& events);

  scheduler_stats stats() const;
  bool idle() const { return policy_.idle(); }

 private:
  void flush_updates();

  kv_cache_manager& kv_;
  scheduling_policy policy_;
  kv_step_planner planner_;
  kv_updates updates_;  // reused between flushes
};

}  // namespace inflight::engine
