// The KV manager actor's plain class: it owns the kv_cache_manager (block pool, block tables, prefix cache)
// and each sequence's token log, and turns the scheduler's step_request (who, in which order, which
// budgets) into a step_plan (which tokens at which positions into which blocks). It is the only place that
// knows whether something fits, so it is also where preemption happens: when the pool runs dry, the most
// recently admitted running sequence gives its blocks back and is recomputed later (vLLM V1's policy).
//
// No CAF, no CUDA: tests drive it synchronously (actors/scheduler.hpp composes it with the policy).
#pragma once

#include <cstdint>
#include <memory>
#include <unordered_map>
#include <vector>

#include "inflight/engine_protocol.hpp"
#include "kv_cache_manager.hpp"

namespace inflight::engine {

struct kv_planner_stats {
  int64_t steps = 0;
  int64_t preemptions = 0;
  int64_t prompt_tokens_computed = 0;  // prompt positions run (recomputes after preemption included)
};

class kv_step_planner {
 public:
  explicit kv_step_planner(kv_cache_manager& kv);
  ~kv_step_planner();
  kv_step_planner(const kv_step_planner&) = delete;
  kv_step_planner& operator=(const kv_step_planner&) = delete;

  // Sampled tokens of the last plan, releases, new sequences (in that order; see kv_updates). Throws
  // std::invalid_argument when the sampled tokens do not fit the last plan.
  void update(const kv_updates& updates);

  // Plans the next step. The returned plan is internal and reused: valid until the plan() after next (two
  // plans may be in flight when the scheduler pipelines). Throws std::invalid_argument for an id it does
  // not know or one in the wrong queue (a protocol error).
  const step_plan& plan(const step_request& request);

  kv_planner_stats stats() const { return counters_; }

 private:
  struct sequence_state;

  sequence_state& known(sequence_id id, bool must_be_running);
  void add_chunk(sequence_state& seq, int32_t num_tokens);
  const step_plan& plan_speculative(const step_request& request);
  void admit(const step_request& request, int32_t budget);
  const step_plan& unplanned();
  void preempt(sequence_state& seq);
  void release(sequence_id id);

  kv_cache_manager& kv_;
  std::unordered_map<sequence_id, std::unique_ptr<sequence_state>> sequences_;
  std::vector<sequence_state*> running_;  // this plan's running set, in admission order
  step_plan plans_[2];                    // the last two plans, by step parity; plan_ is the newest
  step_plan* plan_ = &plans_[0];
  kv_planner_stats counters_;
};

}  // namespace inflight::engine
