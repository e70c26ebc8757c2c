// The engine's actors, as spawn functions, and the few messages that only they exchange. Internal to
// actors/: one translation unit per actor (request_actor.cpp, scheduler_actor.cpp, kv_manager_actor.cpp,
// executor_actor.cpp), each a thin shell over a plain class; engine.cpp wires them together.
#pragma once

#include <caf/actor.hpp>
#include <caf/atom.hpp>
#include <caf/fwd.hpp>
#include <caf/meta/type_name.hpp>
#include <caf/node_id.hpp>

#include <memory>
#include <mutex>
#include <set>

#include "inflight/engine.hpp"
#include "inflight/engine_protocol_inspect.hpp"
#include "inflight/output_constraint.hpp"
#include "kv_cache_manager.hpp"
#include "kv_step_planner.hpp"
#include "scheduling_policy.hpp"

namespace inflight {
class tokenizer;
class backend;

// In bucket_histogram's own namespace, where CAF's unqualified call finds it.
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, bucket_histogram& x) {
  return f(caf::meta::type_name("inflight::bucket_histogram"), x.upper_bounds, x.counts, x.sum, x.count);
}
}  // namespace inflight

namespace inflight::engine {

// Atoms are at most 10 characters in CAF 0.17.
using cancel_atom = caf::atom_constant<caf::atom("ifcancel")>;      // request actor or engine -> ..: stop now
using stopped_atom = caf::atom_constant<caf::atom("ifstopped")>;    // request actor -> scheduler: a stop string ended it
using deadline_atom = caf::atom_constant<caf::atom("ifdeadline")>;  // request actor -> itself: time is up
using release_atom = caf::atom_constant<caf::atom("ifrelease")>;    // scheduler -> executor: drop a sampler
using stats_atom = caf::atom_constant<caf::atom("ifstats")>;        // anyone -> scheduler / KV manager
using kick_atom = caf::atom_constant<caf::atom("ifkick")>;          // scheduler -> itself: look for work again
using route_atom = caf::atom_constant<caf::atom("ifroute")>;        // request actor -> router: which node?
using routed_atom = caf::atom_constant<caf::atom("ifrouted")>;      // request actor -> router: done with a node

// The scheduler's answer to stats_atom: its counters and the busy-loop timing (engine_stats documents them).
struct scheduler_report {
  scheduler_stats counters;
  double loop_seconds = 0, forward_seconds = 0, sampling_seconds = 0, constraint_seconds = 0;
  int64_t constrained_samples = 0;
  int64_t executed_steps = 0;
  std::string failure;  // non-empty once the KV manager or the executor has failed
};

// The KV manager's answer to stats_atom.
struct kv_report {
  kv_cache_stats cache;
  kv_planner_stats planner;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, scheduler_stats& x) {
  return f(caf::meta::type_name("inflight::engine::scheduler_stats"), x.waiting, x.running, x.steps, x.preemptions,
           x.prompt_tokens_computed, x.generated_tokens, x.prefix_hit_tokens, x.finished, x.cancelled, x.aborted,
           x.queue_time_seconds, x.step_batch_size);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, scheduler_report& x) {
  return f(caf::meta::type_name("inflight::engine::scheduler_report"), x.counters, x.loop_seconds, x.forward_seconds,
           x.sampling_seconds, x.constraint_seconds, x.constrained_samples, x.executed_steps, x.failure);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, kv_cache_stats& x) {
  return f(caf::meta::type_name("inflight::engine::kv_cache_stats"), x.num_blocks, x.used_blocks, x.cached_blocks,
           x.free_blocks, x.prefix_queried_tokens, x.prefix_hit_tokens);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, kv_planner_stats& x) {
  return f(caf::meta::type_name("inflight::engine::kv_planner_stats"), x.steps, x.preemptions, x.prompt_tokens_computed);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, kv_report& x) {
  return f(caf::meta::type_name("inflight::engine::kv_report"), x.cache, x.planner);
}

// The other processes (CAF nodes) whose actors may submit to and cancel in a scheduler: an engine node's
// authenticated gateways. Shared by the node's front actor (which admits a gateway once its handshake
// succeeds) and the scheduler (which refuses everyone else from another process: an unauthenticated peer of
// the middleman could otherwise address the scheduler directly). Actors of the scheduler's own process are
// always admitted.
class node_gate {
 public:
  void admit(const caf::node_id& node) {
    std::lock_guard lock(mutex_);
    admitted_.insert(node);
  }
  void revoke(const caf::node_id& node) {
    std::lock_guard lock(mutex_);
    admitted_.erase(node);
  }
  bool admits(const caf::node_id& node) const {
    std::lock_guard lock(mutex_);
    return admitted_.count(node) > 0;
  }

 private:
  mutable std::mutex mutex_;
  std::set<caf::node_id> admitted_;
};

// Owns the block pool (num_blocks x block_size tokens) and the step planner.
caf::actor spawn_kv_manager(caf::actor_system& system, int32_t num_blocks, int32_t block_size, bool prefix_caching);

// Runs `model` on a thread of its own (detached): one step_plan in, one step_result out. `constraints`
// compiles the output constraints of the sequences that have one (structured output).
caf::actor spawn_executor(caf::actor_system& system, std::shared_ptr<backend> model,
                          std::shared_ptr<const constraint_compiler> constraints);

// `pipelining`: plan step N+1 while the executor runs step N. `gate`: who may use it from other processes
// (null: nobody).
caf::actor spawn_scheduler(caf::actor_system& system, const scheduler_config& config, int32_t kv_block_size,
                           int32_t kv_num_blocks, bool pipelining, caf::actor kv_manager, caf::actor executor,
                           std::shared_ptr<const node_gate> gate = nullptr);

// The three long-lived actors of one engine, spawned and wired into `system` (an in-process engine's own
// system, or an engine node's, which has the middleman loaded).
struct engine_actors {
  caf::actor kv_manager, executor, scheduler;
  int32_t max_model_len = 0;  // prompt + max_tokens at most
  int32_t block_size = 0;
  // The executor's, shared with the request actors, which compile a request's constraint first (so that
  // a bad one is refused before it runs, and the executor finds it compiled).
  std::shared_ptr<const constraint_compiler> constraints;
  bool device_sampling = false;  // the backend samples on its device, which takes no token masks yet
};
// Throws std::invalid_argument for unusable options or a tokenizer that does not fit the model.
engine_actors spawn_engine_actors(caf::actor_system& system, std::unique_ptr<backend> model, const tokenizer& tok,
                                  const engine_options& options, std::shared_ptr<const node_gate> gate = nullptr);
// Asks them to stop (after their requests are over); ~actor_system waits for them.
void stop_engine_actors(const engine_actors& actors);
// The engine's counters, asked of the scheduler and the KV manager (blocks; never call it on an io thread).
engine_stats gather_engine_stats(caf::actor_system& system, const engine_actors& actors);

// What every request actor shares. In-process, requests go to `scheduler`; behind a gateway, each request
// asks `router` for an engine node (by its prompt's prefix hashes) and goes to that node's front actor.
struct request_context {
  std::shared_ptr<const tokenizer> tok;
  std::shared_ptr<const chat_template> chat;
  std::shared_ptr<const constraint_compiler> constraints;  // checks structured-output constraints
  bool host_sampling = true;  // false: the engine's backend samples on its device (no token masks, no logit bias)
  int32_t max_model_len = 0;
  caf::actor scheduler;
  caf::actor router;
  int32_t prefix_block_size = 16;   // prompt blocks hashed for the router's prefix affinity
  int32_t prefix_max_blocks = 64;
  int32_t max_attempts = 3;         // nodes a request may be tried on before it fails
};

// One request: prompt -> tokens -> scheduler; token events -> text deltas -> sink; one final event. The
// sink's on_final is called exactly once, then the actor quits.
caf::actor spawn_request(caf::actor_system& system, std::shared_ptr<const request_context> context, request_id id,
                         generation_params params, std::shared_ptr<generation_sink> sink);

}  // namespace inflight::engine
