// A sequence's life here:
//
//   submit ──▶ waiting ──admitted (plan)──▶ running ──finish (stop id / max_tokens)──▶ released
//                 ▲                            │
//                 └──── preempted (plan) ──────┘   (the KV manager freed its blocks; it recomputes on resume)
//
// cancel() takes it out of either queue. This side never sees a block: it counts tokens, checks the finish
// conditions and keeps the queues in order; the KV manager (kv_step_planner) decides what fits.
#include "scheduling_policy.hpp"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace inflight::engine {

struct scheduling_policy::sequence_state {
  sequence_id id = 0;
  std::vector<int32_t> stop_token_ids;
  int32_t prompt_len = 0;
  int32_t generated = 0;
  int32_t max_tokens = 0;
  int32_t priority = 0;
  uint64_t arrival = 0;
  bool running = false;
  bool ever_admitted = false;  // for the queue-time histogram: only the first admission counts
  bool padding = false;  // static batching: finished, but computing on until its batch ends
  int32_t padded = 0;    // tokens computed as padding
  int32_t in_flight = 0; // tokens being sampled for it by plans not yet applied (0..2)
  std::chrono::steady_clock::time_point submitted;
  uint64_t scheduled_step = 0;  // the plan that carries its chunk; apply() ignores chunks of older plans
};

const char* to_string(submit_status status) {
  switch (status) {
    case submit_status::accepted: return "accepted";
    case submit_status::queue_full: return "queue_full";
    case submit_status::too_long: return "too_long";
    case submit_status::empty_prompt: return "empty_prompt";
    case submit_status::duplicate_id: return "duplicate_id";
    case submit_status::invalid_max_tokens: return "invalid_max_tokens";
    case submit_status::unavailable: return "unavailable";
    case submit_status::draining: return "draining";
  }
  return "unknown";
}

const char* to_string(finish_reason reason) {
  switch (reason) {
    case finish_reason::none: return "none";
    case finish_reason::stop: return "stop";
    case finish_reason::length: return "length";
    case finish_reason::cancelled: return "cancelled";
    case finish_reason::aborted: return "aborted";
    case finish_reason::deadline: return "deadline";
    case finish_reason::error: return "error";
  }
  return "unknown";
}

scheduling_policy::scheduling_policy(const scheduler_config& config, int32_t kv_block_size, int32_t kv_num_blocks)
    : config_(config), kv_block_size_(kv_block_size), kv_num_blocks_(kv_num_blocks) {
  if (config.max_num_seqs < 1 || config.max_num_batched_tokens < 1 || config.max_waiting < 0 || kv_block_size < 1)
    throw std::invalid_argument("scheduler: max_num_seqs, max_num_batched_tokens and the block size must be positive");
  // Sized once so that queue moves never allocate; waiting can exceed max_waiting by the preempted ones.
  waiting_.reserve(size_t(config_.max_waiting) + size_t(config_.max_num_seqs));
  running_.reserve(size_t(config_.max_num_seqs));
  request_.running.reserve(size_t(config_.max_num_seqs));
  request_.waiting.reserve(size_t(config_.max_num_seqs));
  updates_.sampled.reserve(size_t(config_.max_num_seqs));
}

scheduling_policy::~scheduling_policy() = default;

scheduling_policy::sequence_state* scheduling_policy::find(sequence_id id) {
  const auto found = sequences_.find(id);
  return found == sequences_.end() ? nullptr : found->second.get();
}

submit_status scheduling_policy::submit(sequence_spec spec, clock::time_point now) {
  if (sequences_.contains(spec.id)) return submit_status::duplicate_id;
  if (spec.prompt.empty()) return submit_status::empty_prompt;
  if (spec.max_tokens < 1) return submit_status::invalid_max_tokens;
  const int64_t total = int64_t(spec.prompt.size()) + spec.max_tokens;
  // Refuse what the pool could not hold even alone: such a sequence would be preempted forever.
  const int64_t blocks_needed = (total + kv_block_size_ - 1) / kv_block_size_;
  if (total > config_.max_model_len || blocks_needed > kv_num_blocks_) return submit_status::too_long;
  if (int64_t(waiting_.size()) >= config_.max_waiting) return submit_status::queue_full;

  auto seq = std::make_unique<sequence_state>();
  seq->id = spec.id;
  seq->prompt_len = int32_t(spec.prompt.size());
  seq->stop_token_ids = std::move(spec.stop_token_ids);
  seq->max_tokens = spec.max_tokens;
  seq->priority = spec.priority;
  seq->arrival = next_arrival_++;
  seq->submitted = now;
  insert_waiting(seq.get(), false);
  sequences_.emplace(spec.id, std::move(seq));
  updates_.added.push_back(kv_new_sequence{spec.id, std::move(spec.prompt), spec.max_tokens});
  return submit_status::accepted;
}

void scheduling_policy::insert_waiting(sequence_state* seq, bool at_front_of_priority) {
  // New arrivals go behind everything of their priority (FCFS); a preempted sequence goes in front of it
  // (vLLM prepends preempted requests), so it resumes before anyone who has not run yet.
  const auto pos = at_front_of_priority
                       ? std::find_if(waiting_.begin(), waiting_.end(),
                                      [&](const sequence_state* w) { return w->priority >= seq->priority; })
                       : std::find_if(waiting_.begin(), waiting_.end(),
                                      [&](const sequence_state* w) { return w->priority > seq->priority; });
  waiting_.insert(pos, seq);
}

bool scheduling_policy::end(sequence_id id, finish_reason reason) {
  sequence_state* seq = find(id);
  if (!seq) return false;
  if (seq->padding && reason != finish_reason::error) return false;  // its output has ended already
  if (reason == finish_reason::stop) ++counters_.finished;
  if (reason == finish_reason::stop && config_.static_batching && seq->running) {
    // Static batching: a member that stops keeps its seat and compute until the batch ends.
    pending_events_.push_back({seq->id, -1, reason, seq->prompt_len, seq->generated});
    seq->padding = true;
    ++num_padding_;
    if (num_padding_ == int32_t(running_.size())) release_padding();
    return true;
  }
  finish_now(*seq, reason);
  return true;
}

void scheduling_policy::finish_now(sequence_state& seq, finish_reason reason) {
  updates_.released.push_back(seq.id);
  if (seq.running) {
    running_.erase(std::find(running_.begin(), running_.end(), &seq));
  } else {
    const auto pos = std::find(waiting_.begin(), waiting_.end(), &seq);
    if (pos != waiting_.end()) waiting_.erase(pos);
  }
  if (seq.padding) --num_padding_;
  pending_events_.push_back({seq.id, -1, reason, seq.prompt_len, seq.generated});
  if (reason == finish_reason::cancelled) ++counters_.cancelled;
  if (reason == finish_reason::aborted) ++counters_.aborted;
  sequences_.erase(seq.id);  // last: destroys `seq`
  if (num_padding_ > 0 && num_padding_ == int32_t(running_.size())) release_padding();
}

scheduling_policy::clock::duration scheduling_policy::batch_formation_delay(clock::time_point now) const {
  if (!config_.static_batching || !running_.empty() || waiting_.empty()) return clock::duration::zero();
  if (int32_t(waiting_.size()) >= config_.max_num_seqs) return clock::duration::zero();
  clock::time_point oldest = waiting_.front()->submitted;
  for (const sequence_state* seq : waiting_) oldest = std::min(oldest, seq->submitted);
  return std::max(clock::duration::zero(), oldest + config_.static_batch_window - now);
}

const step_request& scheduling_policy::propose(clock::time_point now, bool speculative) {
  request_.token_budget = config_.max_num_batched_tokens;
  request_.max_running = config_.max_num_seqs;
  // Static batching admits only into an empty engine, once the batch has formed: the batch is whoever
  // joins in that step (seats and budget permitting), and a member preempted meanwhile waits for the batch
  // to drain. It is a baseline to measure continuous batching against, not a mode to serve.
  request_.may_admit = !config_.static_batching ||
                       (running_.empty() && batch_formation_delay(now) == clock::duration::zero());
  request_.speculative = speculative;
  request_.running.clear();
  for (const sequence_state* seq : running_) {
    if (!seq->padding && seq->generated + seq->in_flight >= seq->max_tokens) continue;  // done once it lands
    request_.running.push_back(seq->id);
  }
  request_.waiting.clear();
  // Candidates beyond the free seats could not be admitted this step anyway.
  const size_t seats = size_t(std::max(0, config_.max_num_seqs - int32_t(running_.size())));
  for (size_t i = 0; request_.may_admit && i < waiting_.size() && i < seats; ++i) request_.waiting.push_back(waiting_[i]->id);
  ++counters_.steps;
  return request_;
}

void scheduling_policy::on_plan(const step_plan& plan, clock::time_point now) {
  for (const sequence_id id : plan.preempted) {
    sequence_state* seq = find(id);
    if (!seq || !seq->running) continue;
    running_.erase(std::find(running_.begin(), running_.end(), seq));
    seq->running = false;
    if (seq->padding) {  // finished already: nothing to resume
      updates_.released.push_back(seq->id);
      --num_padding_;
      sequences_.erase(id);
      continue;
    }
    insert_waiting(seq, true);
    ++counters_.preemptions;
  }
  for (const sequence_id id : plan.aborted) {
    sequence_state* seq = find(id);
    if (seq && seq->padding) {
      running_.erase(std::find(running_.begin(), running_.end(), seq));
      updates_.released.push_back(id);
      --num_padding_;
      sequences_.erase(id);
    } else if (seq) {
      finish_now(*seq, finish_reason::aborted);
    }
  }
  if (num_padding_ > 0 && num_padding_ == int32_t(running_.size())) release_padding();
  for (const sequence_id id : plan.admitted) {
    sequence_state* seq = find(id);
    if (!seq || seq->running) continue;  // cancelled meanwhile: its release is already on the way
    waiting_.erase(std::find(waiting_.begin(), waiting_.end(), seq));
    seq->running = true;
    running_.push_back(seq);
    if (!seq->ever_admitted) {
      seq->ever_admitted = true;
      counters_.queue_time_seconds.observe(std::chrono::duration<double>(now - seq->submitted).count());
    }
  }
  for (const scheduled_chunk& chunk : plan.chunks) {
    if (sequence_state* seq = find(chunk.id)) {
      seq->scheduled_step = plan.step;
      if (chunk.compute_logits) ++seq->in_flight;
    }
  }
}

void scheduling_policy::take_events(std::vector<sequence_event>& events) {
  events.clear();
  events.swap(pending_events_);
}

void scheduling_policy::take_updates(kv_updates& out) {
  out.clear();
  std::swap(out, updates_);
}

void scheduling_policy::apply(const step_plan& plan, std::span<const int32_t> sampled,
                              std::vector<sequence_event>& events) {
  events.clear();
  events.insert(events.end(), pending_events_.begin(), pending_events_.end());
  pending_events_.clear();
  const size_t num_logits = size_t(std::count_if(plan.chunks.begin(), plan.chunks.end(),
                                                 [](const scheduled_chunk& c) { return c.compute_logits; }));
  if (sampled.size() != num_logits)
    throw std::invalid_argument("scheduler::apply: " + std::to_string(sampled.size()) + " sampled tokens for " +
                                std::to_string(num_logits) + " chunks with logits");
  // The KV manager appends the same tokens to its token logs (a stale one is ignored there too).
  updates_.sampled_step = plan.step;
  updates_.sampled.assign(sampled.begin(), sampled.end());
  if (!plan.chunks.empty()) counters_.step_batch_size.observe(double(plan.chunks.size()));

  size_t next_sampled = 0;
  bool any_finished = false;
  for (const scheduled_chunk& chunk : plan.chunks) {
    if (!chunk.compute_logits) continue;
    const int32_t token = sampled[next_sampled++];
    sequence_state* seq = find(chunk.id);
    // Cancelled since (or cancelled and resubmitted under the same id): the chunk is stale. A later plan
    // may already carry the sequence again (pipelining), hence >=.
    if (!seq || !seq->running || seq->scheduled_step < plan.step) continue;
    --seq->in_flight;
    if (seq->padding) {  // its output ended; this token only stands for the compute it costs
      // Padding may not outgrow the context: positions past it do not exist.
      if (seq->prompt_len + seq->generated + ++seq->padded + 1 >= config_.max_model_len) {
        updates_.released.push_back(seq->id);
        seq->running = false;
        --num_padding_;
        any_finished = true;
      }
      continue;
    }
    ++seq->generated;
    ++counters_.generated_tokens;
    finish_reason reason = finish_reason::none;
    if (std::find(seq->stop_token_ids.begin(), seq->stop_token_ids.end(), token) != seq->stop_token_ids.end())
      reason = finish_reason::stop;
    else if (seq->generated >= seq->max_tokens)
      reason = finish_reason::length;
    events.push_back({seq->id, token, reason, seq->prompt_len, seq->generated});
    if (reason == finish_reason::none) continue;
    ++counters_.finished;
    if (config_.static_batching) {
      seq->padding = true;  // keeps its seat until the batch ends
      ++num_padding_;
      continue;
    }
    updates_.released.push_back(seq->id);
    seq->running = false;  // marks it for removal below
    any_finished = true;
  }
  if (any_finished) {
    // One pass keeps admission order; the states go last, after every chunk that might name them.
    std::erase_if(running_, [](const sequence_state* s) { return !s->running; });
    for (const scheduled_chunk& chunk : plan.chunks) {
      const auto found = sequences_.find(chunk.id);
      if (found != sequences_.end() && !found->second->running && found->second->scheduled_step >= plan.step)
        sequences_.erase(found);
    }
  }
  if (num_padding_ > 0 && num_padding_ == int32_t(running_.size())) release_padding();
}

void scheduling_policy::release_padding() {
  // The batch's last real member finished: its padding goes too, and the next batch may form.
  for (sequence_state* seq : running_) {
    updates_.released.push_back(seq->id);
    sequences_.erase(seq->id);
  }
  running_.clear();
  num_padding_ = 0;
}

scheduler_stats scheduling_policy::stats() const {
  scheduler_stats s = counters_;
  s.waiting = int32_t(waiting_.size());
  s.running = int32_t(running_.size());
  return s;
}

}  // namespace inflight::engine
