#include "scheduler.hpp"

#include "inflight/backend.hpp"

namespace inflight::engine {

void to_backend_chunks(const step_plan& plan, std::vector<inflight::sequence_chunk>& out) {
  out.clear();
  const std::span<const int32_t> tokens(plan.token_ids);
  const std::span<const int32_t> blocks(plan.block_ids);
  for (const scheduled_chunk& chunk : plan.chunks) {
    inflight::sequence_chunk view;
    view.tokens = tokens.subspan(size_t(chunk.token_offset), size_t(chunk.num_tokens));
    view.start_position = chunk.start_position;
    view.block_table = blocks.subspan(size_t(chunk.block_offset), size_t(chunk.num_blocks));
    view.compute_logits = chunk.compute_logits;
    out.push_back(view);
  }
}

scheduler::scheduler(const scheduler_config& config, kv_cache_manager& kv)
    : kv_(kv), policy_(config, kv.block_size(), kv.stats().num_blocks), planner_(kv) {}

void scheduler::flush_updates() {
  policy_.take_updates(updates_);
  planner_.update(updates_);
}

submit_status scheduler::submit(sequence_spec spec) {
  const submit_status status = policy_.submit(std::move(spec));
  flush_updates();
  return status;
}

bool scheduler::cancel(sequence_id id) {
  const bool found = policy_.cancel(id);
  flush_updates();
  return found;
}

const step_plan& scheduler::schedule() {
  const step_plan& plan = planner_.plan(policy_.propose());
  policy_.on_plan(plan);
  flush_updates();  // an abort releases its sequence
  return plan;
}

void scheduler::apply(const step_plan& plan, std::span<const int32_t> sampled, std::vector<sequence_event>& events) {
  policy_.apply(plan, sampled, events);
  flush_updates();
}

scheduler_stats scheduler::stats() const {
  scheduler_stats s = policy_.stats();
  const kv_planner_stats planned = planner_.stats();
  s.steps = planned.steps;
  s.preemptions = planned.preemptions;
  s.prompt_tokens_computed = planned.prompt_tokens_computed;
  s.prefix_hit_tokens = kv_.stats().prefix_hit_tokens;
  return s;
}

}  // namespace inflight::engine
