// The engine's three long-lived actors, spawned and wired the same way for an in-process engine
// (engine.cpp) and for an engine node (engine_node.cpp).
#include <caf/all.hpp>

#include <algorithm>
#include <stdexcept>

#include "engine_actors.hpp"
#include "inflight/backend.hpp"
#include "inflight/tokenizer.hpp"

namespace inflight::engine {

engine_actors spawn_engine_actors(caf::actor_system& system, std::unique_ptr<backend> model, const tokenizer& tok,
                                  const engine_options& options, std::shared_ptr<const node_gate> gate) {
  if (!model) throw std::invalid_argument("engine: no backend");
  // Every id the model can sample must be one the tokenizer can decode, and every prompt id the
  // tokenizer checks must be one the model can embed.
  if (tok.vocab_size() != model->config().vocab_size)
    throw std::invalid_argument("engine: the tokenizer has " + std::to_string(tok.vocab_size()) +
                                " tokens but the model's vocabulary is " + std::to_string(model->config().vocab_size));
  const kv_cache_geometry kv = model->kv_geometry();
  scheduler_config sched;
  sched.max_num_seqs = std::min(options.max_num_seqs, model->max_step_sequences());
  sched.max_num_batched_tokens = options.max_num_batched_tokens > 0
                                     ? std::min(options.max_num_batched_tokens, model->max_step_tokens())
                                     : model->max_step_tokens();
  sched.max_waiting = options.max_waiting;
  sched.max_model_len = model->config().context_length;
  sched.static_batching = options.static_batching;
  sched.static_batch_window = options.static_batch_window;
  if (sched.max_num_seqs < 1 || sched.max_num_batched_tokens < 1 || sched.max_waiting < 0)
    throw std::invalid_argument("engine: max_num_seqs and max_num_batched_tokens must be positive");

  engine_actors actors;
  actors.max_model_len = sched.max_model_len;
  actors.block_size = kv.block_size;
  actors.kv_manager = spawn_kv_manager(system, kv.num_blocks, kv.block_size, options.prefix_caching);
  actors.constraints = std::make_shared<const constraint_compiler>(tok, model->config().vocab_size);
  actors.device_sampling = model->samples_on_device();
  actors.executor = spawn_executor(system, std::shared_ptr<backend>(std::move(model)), actors.constraints);
  actors.scheduler = spawn_scheduler(system, sched, kv.block_size, kv.num_blocks, options.pipelining, actors.kv_manager,
                                     actors.executor, std::move(gate));
  return actors;
}

void stop_engine_actors(const engine_actors& actors) {
  for (const caf::actor& actor : {actors.scheduler, actors.kv_manager, actors.executor})
    if (actor) caf::anon_send_exit(actor, caf::exit_reason::user_shutdown);
}

engine_stats gather_engine_stats(caf::actor_system& system, const engine_actors& actors) {
  engine_stats out;
  caf::scoped_actor self{system};
  const auto timeout = std::chrono::seconds(30);
  self->request(actors.scheduler, timeout, stats_atom::value)
      .receive(
          [&](const scheduler_report& report) {
            const scheduler_stats& s = report.counters;
            out.waiting = s.waiting;
            out.running = s.running;
            out.generated_tokens = s.generated_tokens;
            out.finished = s.finished;
            out.cancelled = s.cancelled;
            out.aborted = s.aborted;
            out.queue_time_seconds = s.queue_time_seconds;
            out.step_batch_size = s.step_batch_size;
            out.steps = report.executed_steps;
            out.loop_seconds = report.loop_seconds;
            out.forward_seconds = report.forward_seconds;
            out.sampling_seconds = report.sampling_seconds;
            out.constraint_seconds = report.constraint_seconds;
            out.constrained_samples = report.constrained_samples;
            out.failure = report.failure;
          },
          [&](caf::error& error) { out.failure = "the scheduler does not answer: " + system.render(error); });
  self->request(actors.kv_manager, timeout, stats_atom::value)
      .receive(
          [&](const kv_report& report) {
            out.preemptions = report.planner.preemptions;
            out.prompt_tokens_computed = report.planner.prompt_tokens_computed;
            out.kv_blocks_total = report.cache.num_blocks;
            out.kv_blocks_used = report.cache.used_blocks;
            out.kv_blocks_cached = report.cache.cached_blocks;
            out.kv_blocks_free = report.cache.free_blocks;
            out.prefix_queried_tokens = report.cache.prefix_queried_tokens;
            out.prefix_hit_tokens = report.cache.prefix_hit_tokens;
          },
          [&](caf::error& error) {
            if (out.failure.empty()) out.failure = "the KV manager does not answer: " + system.render(error);
          });
  return out;
}

}  // namespace inflight::engine
