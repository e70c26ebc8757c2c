// A sequence's life here:
//
//   submit ──▶ waiting ──admit──▶ running ──finish (stop id / max_tokens)──▶ freed
//                 ▲                  │
//                 └──── preempt ─────┘   (KV freed, num_computed = 0: prompt + generated are recomputed)
//
// cancel() frees from either queue. num_computed counts the sequence's tokens whose K/V are in its blocks;
// tokens.size() - num_computed are pending (the whole prompt at first, then 1 per step: the last sampled
// token). num_computed advances in apply(), so exactly one plan may be in flight.
#include "scheduler.hpp"

#include <algorithm>
#include <stdexcept>

#include "inflight/backend.hpp"

namespace inflight::engine {

struct scheduler::sequence_state {
  sequence_id id = 0;
  std::vector<int32_t> tokens;  // prompt, then generated ids; reserved in full at submit
  std::vector<int32_t> stop_token_ids;
  int32_t prompt_len = 0;
  int32_t max_tokens = 0;
  int32_t priority = 0;
  uint64_t arrival = 0;
  int32_t num_computed = 0;
  bool running = false;
  uint64_t scheduled_step = 0;  // the plan that carries its chunk; apply() ignores chunks of older plans
  int32_t generated() const { return int32_t(tokens.size()) - prompt_len; }
};

const char* to_string(submit_status status) {
  switch (status) {
    case submit_status::accepted: return "accepted";
    case submit_status::queue_full: return "queue_full";
    case submit_status::too_long: return "too_long";
    case submit_status::empty_prompt: return "empty_prompt";
    case submit_status::duplicate_id: return "duplicate_id";
    case submit_status::invalid_max_tokens: return "invalid_max_tokens";
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
  }
  return "unknown";
}

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

scheduler::scheduler(const scheduler_config& config, kv_cache_manager& kv) : config_(config), kv_(kv) {
  // Sized once so that queue moves never allocate; waiting can exceed max_waiting by the preempted ones.
  waiting_.reserve(size_t(config_.max_waiting) + size_t(config_.max_num_seqs));
  running_.reserve(size_t(config_.max_num_seqs));
}

scheduler::~scheduler() = default;

submit_status scheduler::submit(sequence_spec spec) {
  if (sequences_.contains(spec.id)) return submit_status::duplicate_id;
  if (spec.prompt.empty()) return submit_status::empty_prompt;
  if (spec.max_tokens < 1) return submit_status::invalid_max_tokens;
  const int64_t total = int64_t(spec.prompt.size()) + spec.max_tokens;
  // Refuse what the pool could not hold even alone: such a sequence would be preempted forever.
  const int64_t blocks_needed = (total + kv_.block_size() - 1) / kv_.block_size();
  if (total > config_.max_model_len || blocks_needed > kv_.stats().num_blocks) return submit_status::too_long;
  if (int64_t(waiting_.size()) >= config_.max_waiting) return submit_status::queue_full;

  auto seq = std::make_unique<sequence_state>();
  seq->id = spec.id;
  seq->prompt_len = int32_t(spec.prompt.size());
  seq->tokens = std::move(spec.prompt);
  seq->tokens.reserve(size_t(total));  // appending generated tokens never reallocates
  seq->stop_token_ids = std::move(spec.stop_token_ids);
  seq->max_tokens = spec.max_tokens;
  seq->priority = spec.priority;
  seq->arrival = next_arrival_++;
  insert_waiting(seq.get(), false);
  sequences_.emplace(spec.id, std::move(seq));
  return submit_status::accepted;
}

void scheduler::insert_waiting(sequence_state* seq, bool at_front_of_priority) {
  // New arrivals go behind everything of their priority (FCFS); a preempted sequence goes in front of it
  // (vLLM prepends preempted requests), so it resumes before anyone who has not run yet.
  const auto pos = at_front_of_priority
                       ? std::find_if(waiting_.begin(), waiting_.end(),
                                      [&](const sequence_state* w) { return w->priority >= seq->priority; })
                       : std::find_if(waiting_.begin(), waiting_.end(),
                                      [&](const sequence_state* w) { return w->priority > seq->priority; });
  waiting_.insert(pos, seq);
}

bool scheduler::cancel(sequence_id id) {
  const auto found = sequences_.find(id);
  if (found == sequences_.end()) return false;
  finish_now(*found->second, finish_reason::cancelled);
  return true;
}

void scheduler::finish_now(sequence_state& seq, finish_reason reason) {
  kv_.free(seq.id);
  if (seq.running) {
    running_.erase(std::find(running_.begin(), running_.end(), &seq));
  } else {
    const auto pos = std::find(waiting_.begin(), waiting_.end(), &seq);
    if (pos != waiting_.end()) waiting_.erase(pos);
  }
  pending_events_.push_back({seq.id, -1, reason, seq.prompt_len, seq.generated()});
  if (reason == finish_reason::cancelled) ++counters_.cancelled;
  if (reason == finish_reason::aborted) ++counters_.aborted;
  sequences_.erase(seq.id);  // last: destroys `seq`
}

void scheduler::preempt(sequence_state& seq) {
  // Recompute, not swap (vLLM V1's only mode): drop the KV, recompute prompt + generated on resume. Full
  // blocks already registered stay in the prefix cache, so the resume often hits them.
  kv_.free(seq.id);
  seq.num_computed = 0;
  seq.running = false;
  insert_waiting(&seq, true);
  plan_.preempted.push_back(seq.id);
  ++counters_.preemptions;
}

void scheduler::add_chunk(sequence_state& seq, int32_t num_tokens) {
  scheduled_chunk chunk;
  chunk.id = seq.id;
  chunk.start_position = seq.num_computed;
  chunk.token_offset = int32_t(plan_.token_ids.size());
  chunk.num_tokens = num_tokens;
  const auto new_tokens = std::span<const int32_t>(seq.tokens).subspan(size_t(seq.num_computed), size_t(num_tokens));
  plan_.token_ids.insert(plan_.token_ids.end(), new_tokens.begin(), new_tokens.end());
  const auto table = kv_.block_table(seq.id);
  chunk.block_offset = int32_t(plan_.block_ids.size());
  chunk.num_blocks = int32_t(table.size());
  plan_.block_ids.insert(plan_.block_ids.end(), table.begin(), table.end());
  chunk.compute_logits = seq.num_computed + num_tokens == int32_t(seq.tokens.size());
  plan_.chunks.push_back(chunk);
  // Prompt positions only: a decode, or the recompute of generated tokens after a preemption, is not one.
  counters_.prompt_tokens_computed += std::max(0, std::min(seq.num_computed + num_tokens, seq.prompt_len) - seq.num_computed);
  seq.scheduled_step = plan_.step;
}

const step_plan& scheduler::schedule() {
  plan_.chunks.clear();
  plan_.token_ids.clear();
  plan_.block_ids.clear();
  plan_.preempted.clear();
  plan_.step = uint64_t(++counters_.steps);
  int32_t budget = config_.max_num_batched_tokens;
  const bool ran_before = !running_.empty();

  // 1. Running sequences, in admission order: decodes and unfinished prefills alike.
  for (size_t i = 0; i < running_.size() && budget > 0;) {
    sequence_state& seq = *running_[i];
    const int32_t num_tokens = std::min(int32_t(seq.tokens.size()) - seq.num_computed, budget);
    bool allocated = kv_.allocate_slots(seq.id, seq.num_computed + num_tokens);
    while (!allocated) {
      // No room: preempt the most recently admitted (the back, never one already planned: those sit
      // before i) and retry. If that is this very sequence, it steps aside too.
      sequence_state& victim = *running_.back();
      running_.pop_back();
      if (&victim == &seq && i == 0) {
        // Alone and still no room: blocks held outside this scheduler. Waiting would stall forever.
        victim.running = false;
        finish_now(victim, finish_reason::aborted);
        break;
      }
      preempt(victim);
      if (&victim == &seq) break;
      allocated = kv_.allocate_slots(seq.id, seq.num_computed + num_tokens);
    }
    if (!allocated) break;  // seq left running (it was the back): nothing after it remains
    add_chunk(seq, num_tokens);
    budget -= num_tokens;
    ++i;
  }

  // 2. Waiting sequences, in (priority, arrival) order. Not after a preemption: memory is short, and the
  // preempted one would just be readmitted (as vLLM). Static batching admits only into an empty engine:
  // the batch is whoever joins in that step (seats and budget permitting), and a member preempted meanwhile
  // waits for the batch to drain. It is a baseline to measure continuous batching against, not a mode to serve.
  const bool may_admit = plan_.preempted.empty() && (!config_.static_batching || !ran_before);
  while (may_admit && !waiting_.empty() && int32_t(running_.size()) < config_.max_num_seqs && budget > 0) {
    sequence_state& seq = *waiting_.front();
    // Prefix cache hit: those tokens are already in cached blocks, now attached to the sequence. For a
    // preempted sequence the lookup covers prompt + generated, so a resume can skip its own old blocks.
    seq.num_computed = kv_.computed_prefix(seq.id, seq.tokens);
    const int32_t num_tokens = std::min(int32_t(seq.tokens.size()) - seq.num_computed, budget);
    if (!kv_.allocate_slots(seq.id, seq.num_computed + num_tokens)) {
      kv_.free(seq.id);  // drop the attached prefix blocks; it stays first in line
      seq.num_computed = 0;
      break;
    }
    waiting_.erase(waiting_.begin());
    seq.running = true;
    running_.push_back(&seq);
    add_chunk(seq, num_tokens);
    budget -= num_tokens;
  }
  return plan_;
}

void scheduler::apply(const step_plan& plan, std::span<const int32_t> sampled, std::vector<sequence_event>& events) {
  events.clear();
  events.insert(events.end(), pending_events_.begin(), pending_events_.end());
  pending_events_.clear();
  const size_t num_logits = size_t(std::count_if(plan.chunks.begin(), plan.chunks.end(),
                                                 [](const scheduled_chunk& c) { return c.compute_logits; }));
  if (sampled.size() != num_logits)
    throw std::invalid_argument("scheduler::apply: " + std::to_string(sampled.size()) + " sampled tokens for " +
                                std::to_string(num_logits) + " chunks with logits");
  size_t next_sampled = 0;
  bool any_finished = false;
  for (const scheduled_chunk& chunk : plan.chunks) {
    const int32_t token = chunk.compute_logits ? sampled[next_sampled++] : -1;
    const auto found = sequences_.find(chunk.id);
    // Cancelled since (or cancelled and resubmitted under the same id): the chunk is stale.
    if (found == sequences_.end() || !found->second->running || found->second->scheduled_step != plan.step) continue;
    sequence_state& seq = *found->second;
    seq.num_computed = chunk.start_position + chunk.num_tokens;
    if (chunk.compute_logits) {
      seq.tokens.push_back(token);
      ++counters_.generated_tokens;
    }
    // The new token's K/V is not computed yet, so only blocks full of computed tokens are registered.
    kv_.cache_full_blocks(seq.id, seq.tokens, seq.num_computed);
    if (!chunk.compute_logits) continue;
    finish_reason reason = finish_reason::none;
    if (std::find(seq.stop_token_ids.begin(), seq.stop_token_ids.end(), token) != seq.stop_token_ids.end())
      reason = finish_reason::stop;
    else if (seq.generated() >= seq.max_tokens)
      reason = finish_reason::length;
    events.push_back({seq.id, token, reason, seq.prompt_len, seq.generated()});
    if (reason != finish_reason::none) {
      kv_.free(seq.id);
      seq.running = false;  // marks it for removal below
      ++counters_.finished;
      any_finished = true;
    }
  }
  if (any_finished) {
    // One pass keeps admission order; the states go last, after every chunk that might name them.
    std::erase_if(running_, [](const sequence_state* s) { return !s->running; });
    for (const scheduled_chunk& chunk : plan.chunks) {
      const auto found = sequences_.find(chunk.id);
      if (found != sequences_.end() && !found->second->running && found->second->scheduled_step == plan.step)
        sequences_.erase(found);
    }
  }
}

scheduler_stats scheduler::stats() const {
  scheduler_stats s = counters_;
  s.waiting = int32_t(waiting_.size());
  s.running = int32_t(running_.size());
  s.prefix_hit_tokens = kv_.stats().prefix_hit_tokens;
  return s;
}

}  // namespace inflight::engine
