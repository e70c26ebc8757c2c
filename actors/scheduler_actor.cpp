// The scheduler actor: a thin shell over scheduling_policy that keeps the executor fed, pipelined:
//
//   kick():     policy.propose() ──step_request──▶ KV manager ──step_plan──▶ on_plan()
//   on_plan():  policy.on_plan() ──step_plan──▶ executor (queued behind the step it is running)
//   on_result(): policy.apply() ──token_event──▶ request actors; kick() again
//
// While the executor runs step N, step N+1 is already planned and queued behind it (a speculative plan:
// its decode tokens are placeholders the executor fills with what it sampled in step N), so the executor
// never waits for the scheduler, the KV manager or the messages between them. At most two steps are in
// flight. A speculative plan never preempts; when the pool is short it comes back deferred and the next
// plan is made once step N is back.
//
// Everything the KV manager must know (new prompts, sampled tokens, releases) is sent as kv_updates ahead
// of the next step_request; CAF keeps messages between two actors in order, so the planner always sees
// them first. Messages from outside: sequence_submit (answered with a submit_status), cancel_atom, stats_atom.
//
// Who may send them: actors of this process, and those of the processes the node_gate admits (an engine
// node's authenticated gateways); anyone else gets `unavailable` and is otherwise ignored. Each requester is
// monitored: when it goes away without ending its sequence (a gateway that died, a link that broke), the
// sequence is cancelled and its KV blocks are freed in the next step. The KV manager and the executor are
// monitored too: should either stop (a bug: a protocol error throws inside it), every request fails at
// once instead of waiting for a reply that will never come.
#include <caf/all.hpp>

#include <chrono>
#include <deque>
#include <string>
#include <unordered_map>

#include "engine_actors.hpp"

namespace inflight::engine {

namespace {

using clock = std::chrono::steady_clock;

struct scheduler_state {
  std::unique_ptr<scheduling_policy> policy;
  caf::actor kv_manager, executor;
  std::shared_ptr<const node_gate> gate;
  std::unordered_map<sequence_id, caf::actor> requesters;  // who gets each sequence's token events
  std::unordered_map<caf::actor_addr, sequence_id> sequence_of;  // and the other way round (monitored)
  bool kick_pending = false;    // a delayed kick_atom is on its way
  bool pipelining = true;             // plan the next step while one runs
  bool planning = false;             // a step_request is at the KV manager
  bool planning_speculative = false; // ... made while a step was in flight
  bool speculation_deferred = false; // the pool was short for a speculative plan: wait for the step back
  std::string failure;               // set when the KV manager or the executor failed: the engine is down
  std::deque<step_plan> at_executor;  // plans sent to the executor, oldest (running) first; at most 2
  kv_updates updates;           // reused
  std::vector<sequence_event> events;
  std::unordered_map<sequence_id, size_t> sample_row;  // this step: sequence -> index into result.samples
  // Busy-loop timing (engine_stats): a busy span starts when a step is requested with none in flight and
  // ends when a step completes and no new one follows.
  bool busy = false;
  clock::time_point busy_since;
  double loop_seconds = 0, forward_seconds = 0, sampling_seconds = 0, constraint_seconds = 0;
  int64_t constrained_samples = 0;
  int64_t executed_steps = 0;
  static inline const char* name = "inflight.scheduler";
};

using scheduler_actor = caf::stateful_actor<scheduler_state>;

void flush_updates(scheduler_actor* self) {
  scheduler_state& st = self->state;
  if (st.policy->updates().empty()) return;
  // Released sequences are done with their samplers too (the executor handles its messages in order, so a
  // plan already sent to it still finds them).
  for (const sequence_id id : st.policy->updates().released) self->send(st.executor, release_atom::value, id);
  st.policy->take_updates(st.updates);
  self->send(st.kv_manager, st.updates);
}

// Sends each event to its request actor; a final event forgets the requester. An error event says `error`,
// or, for a sequence the executor failed alone, why.
void deliver(scheduler_actor* self, const step_result* result, const std::string& error) {
  scheduler_state& st = self->state;
  for (const sequence_event& event : st.events) {
    const auto found = st.requesters.find(event.id);
    if (found == st.requesters.end()) continue;
    token_event message;
    message.event = event;
    if (result && !result->samples.empty() && event.token >= 0) {
      // Empty samples (token -1) stand for sequences that did not ask for logprobs.
      if (const auto row = st.sample_row.find(event.id);
          row != st.sample_row.end() && result->samples[row->second].token >= 0) {
        message.has_sample = true;
        message.sample = result->samples[row->second];
      }
    }
    if (event.finished == finish_reason::error) {
      message.error = error;
      if (result) {
        for (const sequence_failure& failure : result->failed)
          if (failure.id == event.id) message.error = failure.message;
      }
    }
    self->send(found->second, std::move(message));
    if (event.finished != finish_reason::none) {
      st.sequence_of.erase(found->second.address());
      st.requesters.erase(found);
    }
  }
  st.events.clear();
}

void end_busy_span(scheduler_state& st) {
  if (!st.busy) return;
  st.loop_seconds += std::chrono::duration<double>(clock::now() - st.busy_since).count();
  st.busy = false;
}

void on_result(scheduler_actor* self, const step_result& result);
void kick(scheduler_actor* self);

// The KV manager or the executor failed (a bug, or the executor's thread is gone): no step will come
// back, so every request is ended with an error now rather than left waiting, and new ones are refused.
void fail_all(scheduler_actor* self, const std::string& what, const caf::error& error) {
  scheduler_state& st = self->state;
  if (!st.failure.empty()) return;
  st.failure = what + " failed: " + self->system().render(error);
  for (auto& [id, requester] : st.requesters) {
    token_event message;
    message.event = {id, -1, finish_reason::error, 0, 0};
    message.error = st.failure;
    self->send(requester, std::move(message));
  }
  st.requesters.clear();
  st.sequence_of.clear();
  st.at_executor.clear();
  st.planning = false;
  end_busy_span(st);
}

void on_plan(scheduler_actor* self, step_plan& plan) {
  scheduler_state& st = self->state;
  st.planning = false;
  const bool speculative = st.planning_speculative;
  st.policy->on_plan(plan);
  flush_updates(self);  // aborted sequences are released
  if (st.policy->has_events()) {
    st.policy->take_events(st.events);
    deliver(self, nullptr, {});
  }
  if (speculative && (plan.deferred || plan.empty())) {
    // Nothing to queue behind the step in flight. If the pool was short, wait for that step; if it is
    // already back (its result overtook this answer), nobody else will kick: plan now.
    st.speculation_deferred = plan.deferred && !st.at_executor.empty();
    if (st.at_executor.empty()) kick(self);
    return;
  }
  if (plan.empty()) {
    // Nothing could run (only possible when the head of the queue does not fit while nothing runs). Do not
    // spin: the next submit, cancel or finish kicks again.
    if (st.at_executor.empty()) end_busy_span(st);
    return;
  }
  st.at_executor.push_back(std::move(plan));
  self->request(st.executor, caf::infinite, st.at_executor.back())
      .then([self](const step_result& result) { on_result(self, result); },
            [self](caf::error& error) { fail_all(self, "the executor", error); });
  kick(self);  // plan the next step while this one runs
}

void kick(scheduler_actor* self) {
  scheduler_state& st = self->state;
  flush_updates(self);
  if (st.policy->has_events() && st.at_executor.empty() && !st.planning) {  // cancellations while idle
    st.policy->take_events(st.events);
    deliver(self, nullptr, {});
  }
  if (!st.failure.empty() || st.planning || st.at_executor.size() >= (st.pipelining ? 2u : 1u)) return;
  if (st.policy->idle()) {
    if (st.at_executor.empty()) end_busy_span(st);
    return;
  }
  const bool speculative = !st.at_executor.empty();
  if (speculative && st.speculation_deferred) return;
  if (!speculative) {
    if (const auto delay = st.policy->batch_formation_delay(); delay > scheduling_policy::clock::duration::zero()) {
      // Static batching with a batch still forming: look again when its window closes.
      end_busy_span(st);
      if (!st.kick_pending) {
        st.kick_pending = true;
        self->delayed_send(self, std::chrono::duration_cast<std::chrono::microseconds>(delay), kick_atom::value);
      }
      return;
    }
  }
  const step_request& request = st.policy->propose(scheduling_policy::clock::now(), speculative);
  if (request.running.empty() && request.waiting.empty()) return;  // all in flight will finish: nothing to add
  if (!st.busy) {
    st.busy = true;
    st.busy_since = clock::now();
  }
  st.planning = true;
  st.planning_speculative = speculative;
  self->request(st.kv_manager, caf::infinite, request)
      .then([self](step_plan& plan) { on_plan(self, plan); },
            [self](caf::error& error) { fail_all(self, "the KV manager", error); });
}

void on_result(scheduler_actor* self, const step_result& result) {
  scheduler_state& st = self->state;
  if (st.at_executor.empty()) return;  // failed meanwhile (fail_all)
  const step_plan plan = std::move(st.at_executor.front());
  st.at_executor.pop_front();
  st.speculation_deferred = false;
  st.forward_seconds += result.forward_seconds;
  st.sampling_seconds += result.sampling_seconds;
  st.constraint_seconds += result.constraint_seconds;
  st.constrained_samples += result.constrained_samples;
  ++st.executed_steps;
  if (!result.error.empty()) {
    // The step failed: so do its sequences (the others keep going). Their blocks are released with them;
    // the KV manager hears of no sampled tokens for this step.
    for (const scheduled_chunk& chunk : plan.chunks) st.policy->end(chunk.id, finish_reason::error);
    st.policy->take_events(st.events);
    deliver(self, nullptr, result.error);
  } else {
    // Sequences the executor could not sample end first, so that apply() passes over their rows.
    for (const sequence_failure& failure : result.failed) st.policy->end(failure.id, finish_reason::error);
    st.sample_row.clear();
    if (!result.samples.empty()) {
      size_t row = 0;
      for (const scheduled_chunk& chunk : plan.chunks)
        if (chunk.compute_logits) st.sample_row[chunk.id] = row++;
    }
    st.policy->apply(plan, result.sampled, st.events);
    deliver(self, &result, {});
  }
  kick(self);
  if (st.at_executor.empty() && !st.planning) end_busy_span(st);
}

// Whether the current message's sender may use this scheduler (see the top of this file).
bool admitted(scheduler_actor* self) {
  const caf::strong_actor_ptr& sender = self->current_sender();
  if (!sender) return false;
  if (sender->node() == self->node()) return true;
  return self->state.gate && self->state.gate->admits(sender->node());
}

// Ends the sequence of `id` when its sender is the one who submitted it (a stop string matched, a cancel).
bool owns(scheduler_actor* self, sequence_id id) {
  const auto found = self->state.requesters.find(id);
  return found != self->state.requesters.end() && self->current_sender() &&
         found->second.address() == self->current_sender()->address();
}

caf::behavior scheduler(scheduler_actor* self, scheduler_config config, int32_t kv_block_size, int32_t kv_num_blocks,
                        bool pipelining, caf::actor kv_manager, caf::actor executor,
                        std::shared_ptr<const node_gate> gate) {
  scheduler_state& st = self->state;
  st.pipelining = pipelining;
  st.policy = std::make_unique<scheduling_policy>(config, kv_block_size, kv_num_blocks);
  st.kv_manager = std::move(kv_manager);
  st.executor = std::move(executor);
  st.gate = std::move(gate);
  self->monitor(st.kv_manager);
  self->monitor(st.executor);
  self->set_down_handler([self](caf::down_msg& down) {
    scheduler_state& st = self->state;
    if (down.source == st.kv_manager.address()) return fail_all(self, "the KV manager", down.reason);
    if (down.source == st.executor.address()) return fail_all(self, "the executor", down.reason);
    // A requester went away with its sequence unfinished: nobody would read its tokens.
    const auto found = st.sequence_of.find(down.source);
    if (found == st.sequence_of.end()) return;
    const sequence_id id = found->second;
    st.sequence_of.erase(found);
    st.requesters.erase(id);
    if (st.policy->cancel(id)) kick(self);
  });
  return {
      [self](sequence_submit& submit) -> int32_t {
        scheduler_state& st = self->state;
        if (!admitted(self)) return int32_t(submit_status::unavailable);
        if (!st.failure.empty()) return int32_t(submit_status::unavailable);
        sampler_setup setup{submit.spec.id, submit.sampling, submit.spec.prompt, submit.constraint};
        const sequence_id id = submit.spec.id;
        const submit_status status = st.policy->submit(std::move(submit.spec));
        if (status == submit_status::accepted) {
          caf::actor requester = caf::actor_cast<caf::actor>(self->current_sender());
          self->monitor(requester);
          st.sequence_of[requester.address()] = id;
          st.requesters[id] = std::move(requester);
          self->send(st.executor, std::move(setup));
          kick(self);
        }
        return int32_t(status);
      },
      [self](kick_atom) {
        self->state.kick_pending = false;
        kick(self);
      },
      [self](cancel_atom, sequence_id id) {
        if (owns(self, id) && self->state.policy->cancel(id)) kick(self);
      },
      // Everything ends now (an engine node whose drain grace is over): from this process only.
      [self](cancel_atom) {
        scheduler_state& st = self->state;
        if (!self->current_sender() || self->current_sender()->node() != self->node()) return;
        std::vector<sequence_id> ids;
        for (const auto& [id, requester] : st.requesters) ids.push_back(id);
        bool any = false;
        for (const sequence_id id : ids) any = st.policy->cancel(id) || any;
        if (any) kick(self);
      },
      // The request actor matched a stop string: the sequence is done (counted as finished, not cancelled).
      [self](stopped_atom, sequence_id id) {
        if (owns(self, id) && self->state.policy->end(id, finish_reason::stop)) kick(self);
      },
      [self](stats_atom) -> scheduler_report {
        scheduler_state& st = self->state;
        scheduler_report report;
        report.counters = st.policy->stats();
        report.loop_seconds = st.loop_seconds;
        if (st.busy) report.loop_seconds += std::chrono::duration<double>(clock::now() - st.busy_since).count();
        report.forward_seconds = st.forward_seconds;
        report.sampling_seconds = st.sampling_seconds;
        report.constraint_seconds = st.constraint_seconds;
        report.constrained_samples = st.constrained_samples;
        report.executed_steps = st.executed_steps;
        report.failure = st.failure;
        return report;
      },
  };
}

}  // namespace

caf::actor spawn_scheduler(caf::actor_system& system, const scheduler_config& config, int32_t kv_block_size,
                           int32_t kv_num_blocks, bool pipelining, caf::actor kv_manager, caf::actor executor,
                           std::shared_ptr<const node_gate> gate) {
  return system.spawn(scheduler, config, kv_block_size, kv_num_blocks, pipelining, std::move(kv_manager),
                      std::move(executor), std::move(gate));
}

}  // namespace inflight::engine
