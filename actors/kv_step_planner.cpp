// A sequence's positions, as the planner sees them:
//
//   tokens       [ prompt ............ | generated ...... | -1 ]   -1: placeholder for a token being sampled
//   confirmed    ───────────────────────────────▶|                 K/V computed by steps that came back
//   num_computed ───────────────────────────────────────▶|         K/V computed or being computed
//
// A plan advances num_computed at once (optimistically) and appends a placeholder for each token it will
// sample, so the next step can be planned while this one runs; the sampled tokens replace the placeholders
// when they come back (update), and only then do full blocks enter the prefix cache.
#include "kv_step_planner.hpp"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace inflight::engine {

struct kv_step_planner::sequence_state {
  sequence_id id = 0;
  std::vector<int32_t> tokens;  // prompt, then generated ids; reserved in full when added
  int32_t prompt_len = 0;
  int32_t num_computed = 0;
  int32_t confirmed = 0;
  bool running = false;
  uint64_t scheduled_step = 0;  // the plan carrying its chunk; sampled tokens of other plans are stale
};

kv_step_planner::kv_step_planner(kv_cache_manager& kv) : kv_(kv) {}
kv_step_planner::~kv_step_planner() = default;

void kv_step_planner::release(sequence_id id) {
  const auto found = sequences_.find(id);
  if (found == sequences_.end()) return;
  kv_.free(id);
  sequences_.erase(found);
}

void kv_step_planner::update(const kv_updates& updates) {
  if (updates.sampled_step != 0) {
    const step_plan& done = plans_[updates.sampled_step % 2];
    if (done.step != updates.sampled_step)
      throw std::invalid_argument("kv_step_planner: sampled tokens for step " + std::to_string(updates.sampled_step) +
                                  ", which is not one of the last two plans");
    size_t next = 0;
    for (const scheduled_chunk& chunk : done.chunks) {
      if (chunk.compute_logits && next >= updates.sampled.size())
        throw std::invalid_argument("kv_step_planner: too few sampled tokens for step " + std::to_string(done.step));
      const int32_t token = chunk.compute_logits ? updates.sampled[next++] : placeholder_token;
      const auto found = sequences_.find(chunk.id);
      // Released since, or a new sequence under a reused id (its steps all come later): stale.
      if (found == sequences_.end() || found->second->scheduled_step < done.step) continue;
      sequence_state& seq = *found->second;
      const int32_t end = chunk.start_position + chunk.num_tokens;
      if (chunk.compute_logits) seq.tokens[size_t(end)] = token;  // the placeholder add_chunk appended
      seq.confirmed = std::max(seq.confirmed, end);
      // Only blocks full of computed tokens are registered; the new token's K/V is not computed yet.
      kv_.cache_full_blocks(seq.id, seq.tokens, seq.confirmed);
    }
  }
  for (const sequence_id id : updates.released) release(id);
  for (const kv_new_sequence& added : updates.added) {
    if (sequences_.contains(added.id))
      throw std::invalid_argument("kv_step_planner: sequence " + std::to_string(added.id) + " added twice");
    auto seq = std::make_unique<sequence_state>();
    seq->id = added.id;
    seq->tokens.reserve(added.tokens.size() + size_t(std::max(0, added.max_tokens)));  // appends never reallocate
    seq->tokens.assign(added.tokens.begin(), added.tokens.end());
    seq->prompt_len = int32_t(added.tokens.size());
    sequences_.emplace(added.id, std::move(seq));
  }
}

kv_step_planner::sequence_state& kv_step_planner::known(sequence_id id, bool must_be_running) {
  const auto found = sequences_.find(id);
  if (found == sequences_.end())
    throw std::invalid_argument("kv_step_planner: unknown sequence " + std::to_string(id));
  if (found->second->running != must_be_running)
    throw std::invalid_argument("kv_step_planner: sequence " + std::to_string(id) +
                                (must_be_running ? " is not running" : " is already running"));
  return *found->second;
}

void kv_step_planner::preempt(sequence_state& seq) {
  // Recompute, not swap (vLLM V1's only mode): drop the KV, recompute prompt + generated on resume. Full
  // blocks already registered stay in the prefix cache, so the resume often hits them. Never with a step
  // in flight (plan_speculative does not preempt), so every token is known.
  kv_.free(seq.id);
  seq.num_computed = 0;
  seq.confirmed = 0;
  seq.running = false;
  plan_->preempted.push_back(seq.id);
  ++counters_.preemptions;
}

void kv_step_planner::add_chunk(sequence_state& seq, int32_t num_tokens) {
  scheduled_chunk chunk;
  chunk.id = seq.id;
  chunk.start_position = seq.num_computed;
  chunk.token_offset = int32_t(plan_->token_ids.size());
  chunk.num_tokens = num_tokens;
  const auto new_tokens = std::span<const int32_t>(seq.tokens).subspan(size_t(seq.num_computed), size_t(num_tokens));
  plan_->token_ids.insert(plan_->token_ids.end(), new_tokens.begin(), new_tokens.end());
  const auto table = kv_.block_table(seq.id);
  chunk.block_offset = int32_t(plan_->block_ids.size());
  chunk.num_blocks = int32_t(table.size());
  plan_->block_ids.insert(plan_->block_ids.end(), table.begin(), table.end());
  chunk.compute_logits = seq.num_computed + num_tokens == int32_t(seq.tokens.size());
  plan_->chunks.push_back(chunk);
  // Prompt positions only: a decode, or the recompute of generated tokens after a preemption, is not one.
  counters_.prompt_tokens_computed +=
      std::max(0, std::min(seq.num_computed + num_tokens, seq.prompt_len) - seq.num_computed);
  seq.scheduled_step = plan_->step;
  seq.num_computed += num_tokens;
  if (chunk.compute_logits) seq.tokens.push_back(placeholder_token);  // becomes the sampled token
}

const step_plan& kv_step_planner::plan(const step_request& request) {
  plan_ = &plans_[uint64_t(counters_.steps + 1) % 2];
  plan_->deferred = false;
  plan_->chunks.clear();
  plan_->token_ids.clear();
  plan_->block_ids.clear();
  plan_->admitted.clear();
  plan_->preempted.clear();
  plan_->aborted.clear();
  plan_->step = uint64_t(++counters_.steps);
  int32_t budget = request.token_budget;

  running_.clear();
  for (const sequence_id id : request.running) running_.push_back(&known(id, true));
  if (request.speculative) return plan_speculative(request);

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
        // Alone and still no room: blocks held outside this planner. Waiting would stall forever.
        kv_.free(victim.id);
        victim.running = false;
        plan_->aborted.push_back(victim.id);
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

  admit(request, budget);
  return *plan_;
}

const step_plan& kv_step_planner::plan_speculative(const step_request& request) {
  // The step before is still running and writing into its sequences' blocks: nobody may be preempted.
  // Make room for every running sequence first (blocks taken now stay with their sequences either way);
  // if the pool cannot, defer: the scheduler asks again, non-speculatively, when that step is back.
  int32_t budget = request.token_budget;
  size_t num_planned = 0;
  for (; num_planned < running_.size() && budget > 0; ++num_planned) {
    sequence_state& seq = *running_[num_planned];
    const int32_t num_tokens = std::min(int32_t(seq.tokens.size()) - seq.num_computed, budget);
    if (!kv_.allocate_slots(seq.id, seq.num_computed + num_tokens)) {
      plan_->deferred = true;
      return unplanned();
    }
    budget -= num_tokens;
  }
  budget = request.token_budget;
  for (size_t i = 0; i < num_planned; ++i) {
    sequence_state& seq = *running_[i];
    const int32_t num_tokens = std::min(int32_t(seq.tokens.size()) - seq.num_computed, budget);
    add_chunk(seq, num_tokens);
    budget -= num_tokens;
  }
  admit(request, budget);
  return plan_->empty() ? unplanned() : *plan_;
}

const step_plan& kv_step_planner::unplanned() {
  // Nothing will run under this step number: the next plan takes it and its slot again, so that the slot
  // of the step still in flight is never reused before that step's tokens come back.
  step_plan& nothing = *plan_;  // stays valid until the next plan(), which reuses it
  --counters_.steps;
  plan_ = &plans_[uint64_t(counters_.steps) % 2];
  return nothing;
}

void kv_step_planner::admit(const step_request& request, int32_t budget) {
  // 2. Admission candidates, in the scheduler's order. Not after a preemption: memory is short, and the
  // preempted one would just be readmitted (as vLLM).
  const bool may_admit = request.may_admit && plan_->preempted.empty() && plan_->aborted.empty();
  for (size_t w = 0; may_admit && w < request.waiting.size() && int32_t(running_.size()) < request.max_running &&
                     budget > 0;
       ++w) {
    sequence_state& seq = known(request.waiting[w], false);
    // Prefix cache hit: those tokens are already in cached blocks, now attached to the sequence. For a
    // preempted sequence the lookup covers prompt + generated, so a resume can skip its own old blocks.
    seq.num_computed = kv_.computed_prefix(seq.id, seq.tokens);
    const int32_t num_tokens = std::min(int32_t(seq.tokens.size()) - seq.num_computed, budget);
    if (!kv_.allocate_slots(seq.id, seq.num_computed + num_tokens)) {
      kv_.free(seq.id);  // drop the attached prefix blocks; it stays first in line
      seq.num_computed = 0;
      break;
    }
    seq.running = true;
    running_.push_back(&seq);
    plan_->admitted.push_back(seq.id);
    add_chunk(seq, num_tokens);
    budget -= num_tokens;
  }
}

}  // namespace inflight::engine
