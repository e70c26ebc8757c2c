// The KV-manager actor: a thin shell over kv_step_planner (which owns nothing but bookkeeping: the KV
// memory itself belongs to the executor's backend). Messages, all from the scheduler and handled in order:
//   kv_updates    fold in sampled tokens, releases and new sequences
//   step_request  answer with the next step_plan
//   stats_atom    answer with a kv_report
#include <caf/all.hpp>

#include "engine_actors.hpp"

namespace inflight::engine {

namespace {

struct kv_manager_state {
  std::unique_ptr<kv_cache_manager> cache;
  std::unique_ptr<kv_step_planner> planner;
  static inline const char* name = "inflight.kv_manager";
};

caf::behavior kv_manager(caf::stateful_actor<kv_manager_state>* self, int32_t num_blocks, int32_t block_size,
                         bool prefix_caching) {
  self->state.cache = std::make_unique<kv_cache_manager>(num_blocks, block_size, prefix_caching);
  self->state.planner = std::make_unique<kv_step_planner>(*self->state.cache);
  return {
      [self](const kv_updates& updates) { self->state.planner->update(updates); },
      // The plan is copied into the reply; the planner keeps its own to match the sampled tokens against.
      [self](const step_request& request) -> step_plan { return self->state.planner->plan(request); },
      [self](stats_atom) -> kv_report { return {self->state.cache->stats(), self->state.planner->stats()}; },
  };
}

}  // namespace

caf::actor spawn_kv_manager(caf::actor_system& system, int32_t num_blocks, int32_t block_size, bool prefix_caching) {
  return system.spawn(kv_manager, num_blocks, block_size, prefix_caching);
}

}  // namespace inflight::engine
