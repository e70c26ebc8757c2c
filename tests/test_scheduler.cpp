// The scheduling policy (actors/scheduler over actors/kv_cache_manager), driven by a fake executor whose
// "sampled" token depends only on (sequence id, position): so a recompute after preemption, a prefix-cache
// hit or a different batch composition must reproduce exactly the same outputs. Every plan is checked
// against the limits (seats, token budget), the block tables it hands out and the tokens it should carry.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <deque>
#include <cstdlib>
#include <map>
#include <new>
#include <random>
#include <set>
#include <vector>

#include "inflight/backend.hpp"
#include "scheduler.hpp"

using namespace inflight::engine;

// GCC 12 pairs the std::free below with the inlined std::allocator's ::operator new and warns, not
// seeing that operator new is replaced with malloc just above it.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"

// Counts heap allocations, to show that steady-state decode steps allocate nothing.
namespace {
std::atomic<int64_t> num_allocations{0};
}
void* operator new(std::size_t size) {
  ++num_allocations;
  if (void* p = std::malloc(size ? size : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

namespace {

constexpr int32_t block_size = 16;
constexpr int32_t stop_token = 500;

int32_t fake_token(sequence_id id, int32_t position) { return int32_t((id * 31 + uint64_t(position)) % 1000) + 10; }

struct expected_output {
  std::vector<int32_t> tokens;
  finish_reason reason = finish_reason::none;
};

// What a sequence must produce, whatever the schedule.
expected_output expect(sequence_id id, int32_t prompt_len, int32_t max_tokens, bool with_stop) {
  expected_output out;
  for (int32_t k = 0; k < max_tokens; ++k) {
    const int32_t token = fake_token(id, prompt_len + k);
    out.tokens.push_back(token);
    if (with_stop && token == stop_token) {
      out.reason = finish_reason::stop;
      return out;
    }
  }
  out.reason = finish_reason::length;
  return out;
}

std::vector<int32_t> make_prompt(sequence_id id, int32_t length) {
  std::vector<int32_t> prompt(static_cast<size_t>(length));
  for (int32_t i = 0; i < length; ++i) prompt[size_t(i)] = int32_t((id * 7 + uint64_t(i) * 13) % 997) + 3;
  return prompt;
}

// The fake executor plus a shadow of what every sequence knows, checking each plan.
struct driver {
  scheduler_config config;
  kv_cache_manager& kv;
  scheduler sched;
  std::map<sequence_id, std::vector<int32_t>> known;  // prompt + generated, as the test sees it
  std::map<sequence_id, int32_t> prompt_len;
  std::map<sequence_id, expected_output> got;
  std::map<sequence_id, uint64_t> first_step, finish_step;
  std::vector<sequence_event> events;
  std::vector<int32_t> sampled;
  bool check_one_decode_per_step = false;  // valid when nothing gets preempted
  int64_t steps_with_work = 0;
  int64_t padding_chunks = 0;
  std::vector<sequence_id> last_chunk_ids;

  driver(const scheduler_config& c, kv_cache_manager& k) : config(c), kv(k), sched(c, k) {}

  submit_status submit(sequence_id id, int32_t length, int32_t max_tokens, bool with_stop = true, int32_t priority = 0,
                       std::vector<int32_t> prompt = {}) {
    if (prompt.empty()) prompt = make_prompt(id, length);
    sequence_spec spec{id, prompt, max_tokens, {}, priority};
    if (with_stop) spec.stop_token_ids = {stop_token, 99999};
    const submit_status status = sched.submit(spec);
    if (status == submit_status::accepted) {
      known[id] = prompt;
      prompt_len[id] = int32_t(prompt.size());
    }
    return status;
  }

  // One step; returns the plan's chunks (copied) for the caller's checks.
  std::vector<scheduled_chunk> step() {
    // Sequences done prefilling and still running before the step: each must get exactly one token.
    std::set<sequence_id> decoding;
    for (const auto& [id, tokens] : known)
      if (!got.contains(id) || got[id].reason == finish_reason::none)
        if (int32_t(tokens.size()) > prompt_len[id] && first_step.contains(id)) decoding.insert(id);

    const step_plan& plan = sched.schedule();
    REQUIRE(int32_t(plan.chunks.size()) <= config.max_num_seqs);
    int32_t total = 0;
    sampled.clear();
    std::set<sequence_id> in_plan;
    for (const scheduled_chunk& chunk : plan.chunks) {
      REQUIRE(known.contains(chunk.id));
      CHECK(in_plan.insert(chunk.id).second);
      if (got.contains(chunk.id) && got[chunk.id].reason != finish_reason::none) {
        // Static batching's padding: a finished member decoding on (output ignored) until its batch ends.
        CHECK(config.static_batching);
        CHECK(chunk.num_tokens == 1);
        CHECK(chunk.compute_logits);
        sampled.push_back(0);
        ++padding_chunks;
        total += chunk.num_tokens;
        continue;
      }
      const auto& tokens = known[chunk.id];
      REQUIRE(chunk.num_tokens >= 1);
      REQUIRE(chunk.start_position + chunk.num_tokens <= int32_t(tokens.size()));
      // The plan carries exactly the sequence's tokens at those positions.
      for (int32_t i = 0; i < chunk.num_tokens; ++i)
        REQUIRE(plan.token_ids[size_t(chunk.token_offset + i)] == tokens[size_t(chunk.start_position + i)]);
      // Its block table covers every position it writes.
      CHECK(int64_t(chunk.num_blocks) * block_size >= chunk.start_position + chunk.num_tokens);
      CHECK(chunk.compute_logits == (chunk.start_position + chunk.num_tokens == int32_t(tokens.size())));
      if (chunk.compute_logits) sampled.push_back(fake_token(chunk.id, chunk.start_position + chunk.num_tokens));
      total += chunk.num_tokens;
      first_step.try_emplace(chunk.id, plan.step);
    }
    CHECK(total <= config.max_num_batched_tokens);
    if (check_one_decode_per_step) {
      CHECK(plan.preempted.empty());
      for (const scheduled_chunk& chunk : plan.chunks)
        if (decoding.contains(chunk.id)) CHECK(chunk.num_tokens == 1);
      CHECK(std::count_if(plan.chunks.begin(), plan.chunks.end(),
                          [&](const scheduled_chunk& c) { return decoding.contains(c.id); }) == int64_t(decoding.size()));
    }
    if (!plan.empty()) ++steps_with_work;
    std::vector<scheduled_chunk> chunks = plan.chunks;
    sched.apply(plan, sampled, events);
    for (const sequence_event& event : events) {
      auto& out = got[event.id];
      if (event.token >= 0) {
        out.tokens.push_back(event.token);
        known[event.id].push_back(event.token);
      }
      CHECK(event.prompt_tokens == prompt_len[event.id]);
      CHECK(event.generated_tokens == int32_t(out.tokens.size()));
      if (event.finished != finish_reason::none) {
        out.reason = event.finished;
        finish_step[event.id] = plan.step;
      }
    }
    return chunks;
  }

  void run_until_idle(int max_steps = 100000) {
    for (int i = 0; i < max_steps && !sched.idle(); ++i) step();
    REQUIRE(sched.idle());
  }
};

std::map<sequence_id, expected_output> run_random_workload(int32_t num_blocks, bool prefix_caching, int64_t* preemptions) {
  kv_cache_manager kv(num_blocks, block_size, prefix_caching);
  scheduler_config config;
  config.max_num_seqs = 32;
  config.max_num_batched_tokens = 256;
  driver d(config, kv);
  std::mt19937 rng(1234);
  std::uniform_int_distribution<int32_t> prompt_len(1, 60), max_tokens(1, 60);
  for (sequence_id id = 1; id <= 40; ++id) REQUIRE(d.submit(id, prompt_len(rng), max_tokens(rng)) == submit_status::accepted);
  d.run_until_idle();
  CHECK(kv.stats().used_blocks == 0);
  *preemptions = d.sched.stats().preemptions;
  return d.got;
}

}  // namespace

TEST_CASE("random workload: every sequence finishes with the right tokens and no block leaks") {
  kv_cache_manager kv(2048, block_size, true);
  scheduler_config config;
  config.max_num_seqs = 32;
  config.max_num_batched_tokens = 256;
  driver d(config, kv);
  d.check_one_decode_per_step = true;
  std::mt19937 rng(42);
  std::uniform_int_distribution<int32_t> prompt_len(1, 300), max_tokens(1, 200);
  std::map<sequence_id, expected_output> expected;
  for (sequence_id id = 1; id <= 200; ++id) {
    const int32_t len = prompt_len(rng), max = max_tokens(rng);
    REQUIRE(d.submit(id, len, max) == submit_status::accepted);
    expected[id] = expect(id, len, max, true);
  }
  CHECK(d.sched.stats().waiting == 200);

  // Continuous batching: a finish in step k frees a seat that a waiting sequence takes in step k + 1.
  int stops = 0;
  while (!d.sched.idle()) {
    const auto finished_before = d.finish_step.size();
    d.step();
    const bool someone_finished = d.finish_step.size() > finished_before;
    const int32_t waiting_after = d.sched.stats().waiting;
    if (someone_finished && waiting_after > 0) {
      const auto chunks = d.step();
      int32_t total = 0;
      for (const auto& c : chunks) total += c.num_tokens;
      // Someone new joined right away, unless a prefill still in progress took the whole token budget.
      CHECK((d.sched.stats().waiting < waiting_after || total == config.max_num_batched_tokens));
    }
    REQUIRE(d.sched.stats().steps < 100000);
  }
  for (const auto& [id, want] : expected) {
    REQUIRE(d.got.contains(id));
    CHECK(d.got[id].tokens == want.tokens);
    CHECK(d.got[id].reason == want.reason);
    if (want.reason == finish_reason::stop) ++stops;
  }
  CHECK(stops > 0);  // the stop path is exercised
  const scheduler_stats stats = d.sched.stats();
  CHECK(stats.finished == 200);
  CHECK(stats.preemptions == 0);
  CHECK(stats.running == 0);
  CHECK(kv.stats().used_blocks == 0);
}

TEST_CASE("continuous batching: seats and token budget hold and a decode gets one token per step") {
  kv_cache_manager kv(1024, block_size, false);
  scheduler_config config;
  config.max_num_seqs = 4;
  config.max_num_batched_tokens = 64;
  driver d(config, kv);
  d.check_one_decode_per_step = true;
  d.submit(1, 10, 30, false);
  d.submit(2, 10, 5, false);
  for (sequence_id id = 3; id <= 12; ++id) d.submit(id, 20 + int32_t(id), 8, false);
  d.run_until_idle();
  // Sequence 2 finishes after 5 tokens; the next waiting one (5) joins the very next step.
  REQUIRE(d.finish_step.contains(2));
  CHECK(d.first_step[5] == d.finish_step[2] + 1);
  CHECK(kv.stats().used_blocks == 0);
}

TEST_CASE("chunked prefill: a long prompt is spread over steps while others keep decoding") {
  kv_cache_manager kv(1024, block_size, false);
  scheduler_config config;
  config.max_num_batched_tokens = 128;
  driver d(config, kv);
  d.check_one_decode_per_step = true;
  d.submit(1, 5, 100, false);
  d.submit(2, 7, 100, false);
  d.step();  // both prefilled, first tokens out
  d.submit(3, 1000, 4, false);
  int prefill_steps = 0;
  for (;;) {
    const auto chunks = d.step();
    // The two decoders get one token in every step of the long prefill.
    CHECK(std::count_if(chunks.begin(), chunks.end(), [](const scheduled_chunk& c) { return c.id != 3 && c.num_tokens == 1; }) == 2);
    const auto long_one = std::find_if(chunks.begin(), chunks.end(), [](const scheduled_chunk& c) { return c.id == 3; });
    REQUIRE(long_one != chunks.end());
    CHECK(long_one->num_tokens <= 126);
    ++prefill_steps;
    if (long_one->compute_logits) break;
    REQUIRE(prefill_steps < 20);
  }
  CHECK(prefill_steps == 8);  // 1000 tokens at 126 a step (128 less the two decodes)
  d.run_until_idle();
  CHECK(d.got[3].tokens == expect(3, 1000, 4, false).tokens);
  CHECK(d.sched.stats().prompt_tokens_computed == 5 + 7 + 1000);
  CHECK(kv.stats().used_blocks == 0);
}

TEST_CASE("preemption with a tiny pool recomputes to the same outputs") {
  int64_t big_preemptions = 0, tiny_preemptions = 0, tiny_cached_preemptions = 0;
  const auto big = run_random_workload(4096, false, &big_preemptions);
  const auto tiny = run_random_workload(10, false, &tiny_preemptions);
  const auto tiny_cached = run_random_workload(10, true, &tiny_cached_preemptions);
  CHECK(big_preemptions == 0);
  CHECK(tiny_preemptions > 0);
  CHECK(tiny_cached_preemptions > 0);
  REQUIRE(big.size() == 40);
  for (const auto& [id, out] : big) {
    CHECK(tiny.at(id).tokens == out.tokens);
    CHECK(tiny.at(id).reason == out.reason);
    CHECK(tiny_cached.at(id).tokens == out.tokens);
  }
}

TEST_CASE("preemption is reported in the plan and nothing stalls") {
  kv_cache_manager kv(4, block_size, false);  // 64 token slots
  scheduler_config config;
  driver d(config, kv);
  d.submit(1, 20, 40, false);  // 60 tokens at most: 4 blocks
  d.submit(2, 20, 40, false);
  d.submit(3, 5, 2, false);
  bool saw_preemption = false;
  int64_t steps_with_work = 0, sequences_in_steps = 0, steps_of_one = 0;
  for (int i = 0; i < 1000 && !d.sched.idle(); ++i) {
    const auto& plan = d.sched.schedule();
    if (!plan.preempted.empty()) {
      saw_preemption = true;
      CHECK(plan.empty() == false);
    }
    if (!plan.empty()) {
      ++steps_with_work;
      sequences_in_steps += int64_t(plan.chunks.size());
      steps_of_one += plan.chunks.size() == 1;
    }
    std::vector<int32_t> sampled;
    for (const auto& c : plan.chunks)
      if (c.compute_logits) sampled.push_back(fake_token(c.id, c.start_position + c.num_tokens));
    d.sched.apply(plan, sampled, d.events);
  }
  CHECK(d.sched.idle());
  CHECK(saw_preemption);
  CHECK(kv.stats().used_blocks == 0);
  // The /metrics histograms: one batch size per step; one queue time per sequence, a preempted sequence's
  // return not counted again.
  const scheduler_stats stats = d.sched.stats();
  CHECK(stats.step_batch_size.count == steps_with_work);
  CHECK(stats.step_batch_size.sum == doctest::Approx(double(sequences_in_steps)));
  CHECK(stats.step_batch_size.counts[0] == steps_of_one);  // the "le 1" bucket
  CHECK(stats.queue_time_seconds.count == 3);
}

TEST_CASE("cancellation frees blocks while waiting and during prefill and decode") {
  kv_cache_manager kv(256, block_size, false);
  scheduler_config config;
  config.max_num_seqs = 2;
  config.max_num_batched_tokens = 64;
  driver d(config, kv);
  d.submit(1, 10, 100, false);
  d.step();
  d.step();  // 1 decodes
  d.submit(2, 500, 10, false);
  d.submit(3, 10, 10, false);  // waits: two seats only
  d.step();
  CHECK(d.sched.stats().running == 2);
  CHECK(d.sched.stats().waiting == 1);
  const int32_t used = kv.stats().used_blocks;

  CHECK(d.sched.cancel(3));  // waiting: holds nothing
  CHECK(kv.stats().used_blocks == used);
  CHECK_FALSE(d.sched.cancel(3));
  CHECK_FALSE(d.sched.cancel(77));

  CHECK(d.sched.cancel(2));  // mid-prefill
  CHECK(kv.stats().used_blocks == int32_t(kv.block_table(1).size()));
  d.step();  // delivers both cancelled events
  CHECK(d.got[3].reason == finish_reason::cancelled);
  CHECK(d.got[2].reason == finish_reason::cancelled);
  CHECK(d.got[1].reason == finish_reason::none);

  // Cancelled with its chunk in flight: apply() ignores the stale chunk.
  d.submit(4, 10, 100, false);
  d.step();
  const step_plan& plan = d.sched.schedule();
  std::vector<int32_t> sampled;
  for (const auto& c : plan.chunks)
    if (c.compute_logits) sampled.push_back(fake_token(c.id, c.start_position + c.num_tokens));
  CHECK(d.sched.cancel(1));  // decoding
  CHECK(d.sched.cancel(4));
  CHECK(kv.stats().used_blocks == 0);
  std::vector<sequence_event> events;
  d.sched.apply(plan, sampled, events);
  REQUIRE(events.size() == 2);
  for (const auto& e : events) {
    CHECK(e.finished == finish_reason::cancelled);
    CHECK(e.token == -1);
  }
  CHECK(d.sched.idle());
  CHECK(d.sched.stats().cancelled == 4);
  CHECK(kv.stats().used_blocks == 0);
}

TEST_CASE("prefix cache: a shared system prompt is skipped and outputs are unchanged") {
  std::vector<int32_t> system(64);
  for (int32_t i = 0; i < 64; ++i) system[size_t(i)] = 1000 + i;
  auto prompt_for = [&](int32_t salt) {
    std::vector<int32_t> p = system;
    for (int32_t i = 0; i < 10; ++i) p.push_back(2000 + salt * 10 + i);
    return p;
  };
  std::map<sequence_id, expected_output> outputs[2];
  int32_t second_start = -1;
  for (int cached = 0; cached < 2; ++cached) {
    kv_cache_manager kv(256, block_size, cached == 1);
    driver d(scheduler_config{}, kv);
    d.submit(1, 0, 20, false, 0, prompt_for(1));
    d.run_until_idle();
    d.submit(2, 0, 20, false, 0, prompt_for(2));
    const auto chunks = d.step();
    REQUIRE(chunks.size() == 1);
    if (cached) {
      second_start = chunks[0].start_position;
      CHECK(kv.stats().prefix_hit_tokens == second_start);
      CHECK(d.sched.stats().prefix_hit_tokens == second_start);
      CHECK(d.sched.stats().prompt_tokens_computed == 74 + 74 - second_start);
    } else {
      CHECK(chunks[0].start_position == 0);
    }
    d.run_until_idle();
    CHECK(kv.stats().used_blocks == 0);
    outputs[cached] = d.got;
  }
  CHECK((second_start == 48 || second_start == 64));
  CHECK(outputs[0].at(1).tokens == outputs[1].at(1).tokens);
  CHECK(outputs[0].at(2).tokens == outputs[1].at(2).tokens);
  CHECK(outputs[1].at(2).tokens == expect(2, 74, 20, false).tokens);
}

TEST_CASE("admission control refuses what it cannot take") {
  kv_cache_manager kv(64, block_size, false);  // 1024 token slots
  scheduler_config config;
  config.max_waiting = 4;
  driver d(config, kv);
  for (sequence_id id = 1; id <= 4; ++id) CHECK(d.submit(id, 10, 10) == submit_status::accepted);
  CHECK(d.submit(5, 10, 10) == submit_status::queue_full);
  CHECK(d.submit(1, 10, 10) == submit_status::duplicate_id);
  CHECK(d.submit(6, 8000, 500) == submit_status::too_long);   // over max_model_len
  CHECK(d.submit(7, 1000, 100) == submit_status::too_long);   // over the whole pool
  CHECK(d.submit(8, 10, 0) == submit_status::invalid_max_tokens);
  CHECK(d.sched.submit(sequence_spec{9, {}, 10, {}, 0}) == submit_status::empty_prompt);
  CHECK(std::string(to_string(submit_status::queue_full)) == "queue_full");
  d.step();  // the four start: room again
  CHECK(d.submit(5, 10, 10) == submit_status::accepted);
  d.run_until_idle();
  CHECK(d.sched.stats().finished == 5);
}

TEST_CASE("priority: lower priority values are admitted first and FCFS within") {
  kv_cache_manager kv(256, block_size, false);
  scheduler_config config;
  config.max_num_seqs = 1;
  driver d(config, kv);
  d.submit(1, 5, 2, false, 5);
  d.submit(2, 5, 2, false, 1);
  d.submit(3, 5, 2, false, 5);
  d.submit(4, 5, 2, false, 1);
  d.run_until_idle();
  CHECK(d.first_step[2] < d.first_step[4]);
  CHECK(d.first_step[4] < d.first_step[1]);
  CHECK(d.first_step[1] < d.first_step[3]);
}

TEST_CASE("static batching waits for the whole batch and takes more steps than continuous batching") {
  int64_t steps[2] = {0, 0};
  for (int is_static = 0; is_static < 2; ++is_static) {
    kv_cache_manager kv(256, block_size, false);
    scheduler_config config;
    config.max_num_seqs = 4;
    config.static_batching = is_static == 1;
    driver d(config, kv);
    const int32_t max_tokens[8] = {10, 40, 5, 20, 30, 8, 25, 12};
    for (sequence_id id = 1; id <= 8; ++id) d.submit(id, 4 + int32_t(id), max_tokens[id - 1], false);
    d.run_until_idle();
    steps[is_static] = d.steps_with_work;
    // Static batches pad: every step of a batch carries all 4 members until the longest finishes.
    if (is_static) CHECK(d.padding_chunks > 0); else CHECK(d.padding_chunks == 0);
    uint64_t first_batch_done = 0;
    for (sequence_id id = 1; id <= 4; ++id) first_batch_done = std::max(first_batch_done, d.finish_step[id]);
    for (sequence_id id = 5; id <= 8; ++id) {
      if (is_static) CHECK(d.first_step[id] > first_batch_done);
      CHECK(d.got[id].tokens.size() == size_t(max_tokens[id - 1]));
    }
    CHECK(kv.stats().used_blocks == 0);
  }
  CHECK(steps[1] > steps[0]);
}

TEST_CASE("to_backend_chunks views the plan arrays") {
  kv_cache_manager kv(64, block_size, false);
  scheduler sched(scheduler_config{}, kv);
  REQUIRE(sched.submit(sequence_spec{1, make_prompt(1, 20), 3, {}, 0}) == submit_status::accepted);
  REQUIRE(sched.submit(sequence_spec{2, make_prompt(2, 5), 3, {}, 0}) == submit_status::accepted);
  const step_plan& plan = sched.schedule();
  std::vector<inflight::sequence_chunk> views;
  to_backend_chunks(plan, views);
  REQUIRE(views.size() == 2);
  CHECK(views[0].tokens.size() == 20);
  CHECK(views[0].tokens[19] == make_prompt(1, 20)[19]);
  CHECK(views[0].block_table.size() == 2);
  CHECK(views[1].tokens.size() == 5);
  CHECK(views[1].block_table.size() == 1);
  CHECK(views[1].block_table[0] == kv.block_table(2)[0]);
  CHECK(views[1].compute_logits);
  std::vector<sequence_event> events;
  CHECK_THROWS_AS(sched.apply(plan, std::vector<int32_t>{1}, events), std::invalid_argument);
}

TEST_CASE("steady-state decode steps allocate nothing") {
  kv_cache_manager kv(64, block_size, true);
  scheduler sched(scheduler_config{}, kv);
  // Prompt 2 + 12 generated stays inside one block: the KV manager's tables do not grow either.
  for (sequence_id id = 1; id <= 4; ++id)
    REQUIRE(sched.submit(sequence_spec{id, make_prompt(id, 2), 12, {99999}, 0}) == submit_status::accepted);
  std::vector<int32_t> sampled;
  sampled.reserve(16);
  std::vector<sequence_event> events;
  events.reserve(16);
  auto one_step = [&] {
    const step_plan& plan = sched.schedule();
    sampled.clear();
    for (const auto& c : plan.chunks)
      if (c.compute_logits) sampled.push_back(fake_token(c.id, c.start_position + c.num_tokens));
    sched.apply(plan, sampled, events);
  };
  one_step();  // prefill: tables, plan arrays
  one_step();  // first decode: plan arrays at their steady size
  const int64_t before = num_allocations.load();
  for (int i = 0; i < 8; ++i) one_step();
  CHECK(num_allocations.load() == before);
  for (int i = 0; i < 10 && !sched.idle(); ++i) one_step();
  CHECK(sched.idle());
  CHECK(kv.stats().used_blocks == 0);
}

// The scheduler actor's pipelining, without actors: step N+1 is planned (speculatively, placeholders for
// the tokens step N is sampling) before step N's tokens are applied, as scheduler_actor.cpp does. The fake
// executor fills the placeholders with what it sampled for each sequence, as executor_actor.cpp does.
namespace {

struct pipelined_run {
  std::map<sequence_id, expected_output> got;
  int64_t speculative_plans = 0, deferred_plans = 0, preemptions = 0;
};

pipelined_run run_pipelined(int32_t num_blocks, bool prefix_caching) {
  kv_cache_manager kv(num_blocks, block_size, prefix_caching);
  scheduler_config config;
  config.max_num_seqs = 16;
  config.max_num_batched_tokens = 128;
  scheduling_policy policy(config, block_size, num_blocks);
  kv_step_planner planner(kv);
  kv_updates updates;
  auto flush = [&] {
    policy.take_updates(updates);
    planner.update(updates);
  };
  std::map<sequence_id, std::vector<int32_t>> known;  // prompt + generated, as the executor learns them
  std::map<sequence_id, int32_t> last_sampled;
  std::mt19937 rng(99);
  std::uniform_int_distribution<int32_t> prompt_len(1, 50), max_tokens(1, 50);
  for (sequence_id id = 1; id <= 40; ++id) {
    sequence_spec spec{id, make_prompt(id, prompt_len(rng)), max_tokens(rng), {stop_token}, 0};
    known[id] = spec.prompt;
    REQUIRE(policy.submit(spec) == submit_status::accepted);
  }
  flush();

  pipelined_run run;
  std::deque<step_plan> in_flight;
  std::vector<sequence_event> events;
  for (int guard = 0; guard < 100000; ++guard) {
    while (in_flight.size() < 2 && !policy.idle()) {
      const bool speculative = !in_flight.empty();
      const step_request& request = policy.propose(scheduling_policy::clock::now(), speculative);
      if (request.running.empty() && request.waiting.empty()) break;
      const step_plan& plan = planner.plan(request);
      policy.on_plan(plan);
      flush();
      run.speculative_plans += speculative;
      if (plan.deferred) {
        REQUIRE(speculative);
        ++run.deferred_plans;
        // As when a submit kicks the scheduler meanwhile: a second attempt must not take the slot of the
        // step in flight either (its tokens are applied below).
        const step_plan& again = planner.plan(policy.propose(scheduling_policy::clock::now(), true));
        policy.on_plan(again);
        flush();
        CHECK(again.empty());
        break;
      }
      if (speculative) CHECK(plan.preempted.empty());
      run.preemptions += int64_t(plan.preempted.size());
      if (plan.empty()) break;
      in_flight.push_back(plan);
    }
    if (in_flight.empty()) break;

    // Execute the oldest plan: fill placeholders, check every token, sample.
    step_plan plan = std::move(in_flight.front());
    in_flight.pop_front();
    std::vector<int32_t> sampled;
    for (const scheduled_chunk& chunk : plan.chunks) {
      const bool alive = !run.got.contains(chunk.id) || run.got[chunk.id].reason == finish_reason::none;
      for (int32_t i = 0; i < chunk.num_tokens; ++i) {
        int32_t& token = plan.token_ids[size_t(chunk.token_offset + i)];
        if (token == placeholder_token) token = last_sampled[chunk.id];
        // A finished sequence's chunk in the plan after its last token is wasted work, never checked.
        if (alive) REQUIRE(token == known[chunk.id].at(size_t(chunk.start_position + i)));
      }
      if (chunk.compute_logits) {
        const int32_t token = fake_token(chunk.id, chunk.start_position + chunk.num_tokens);
        last_sampled[chunk.id] = token;
        sampled.push_back(token);
      }
    }
    policy.apply(plan, sampled, events);
    flush();
    for (const sequence_event& event : events) {
      auto& out = run.got[event.id];
      if (event.token >= 0) {
        out.tokens.push_back(event.token);
        known[event.id].push_back(event.token);
      }
      if (event.finished != finish_reason::none) out.reason = event.finished;
    }
  }
  CHECK(policy.idle());
  CHECK(kv.stats().used_blocks == 0);
  return run;
}

}  // namespace

TEST_CASE("pipelined planning gives the same outputs and never preempts under a step in flight") {
  const pipelined_run roomy = run_pipelined(4096, false);
  const pipelined_run tight = run_pipelined(12, true);  // the pool forces deferrals and preemptions
  CHECK(roomy.speculative_plans > 0);
  CHECK(roomy.deferred_plans == 0);
  CHECK(tight.deferred_plans > 0);
  CHECK(tight.preemptions > 0);
  REQUIRE(roomy.got.size() == 40);
  std::mt19937 rng(99);
  std::uniform_int_distribution<int32_t> prompt_len(1, 50), max_tokens(1, 50);
  for (sequence_id id = 1; id <= 40; ++id) {
    const int32_t length = prompt_len(rng), cap = max_tokens(rng);
    const expected_output want = expect(id, length, cap, true);
    CHECK(roomy.got.at(id).tokens == want.tokens);
    CHECK(roomy.got.at(id).reason == want.reason);
    CHECK(tight.got.at(id).tokens == want.tokens);
    CHECK(tight.got.at(id).reason == want.reason);
  }
}
