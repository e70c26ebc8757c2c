// engine::create: the actor system and the four kinds of actors, wired as ARCHITECTURE.md draws them.
// The engine object itself holds no scheduling state: it spawns a request actor per submit, keeps the
// handles of live requests (for cancel) and counts them (for wait_idle).
#include "inflight/engine.hpp"

#include <caf/all.hpp>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <stdexcept>
#include <unordered_map>

#include "engine_actors.hpp"
#include "inflight/tokenizer.hpp"

namespace inflight {

const char* to_string(request_error error) {
  switch (error) {
    case request_error::none: return "none";
    case request_error::invalid_request: return "invalid_request";
    case request_error::queue_full: return "queue_full";
    case request_error::internal: return "internal";
  }
  return "unknown";
}

namespace {

using namespace inflight::engine;

caf::actor_system_config make_caf_config(int threads) {
  caf::actor_system_config config;
  // Work sharing: on a small machine the default work stealing adds tens of microseconds to every hop
  // between actors on different threads (docs/caf-0.17.md §6); our hot loop is hops.
  config.set("scheduler.policy", caf::atom("sharing"));
  config.set("scheduler.max-threads", size_t(std::max(1, threads)));
  return config;
}

class actor_engine;

// Wraps the caller's sink: the final event also retires the request from the engine's books.
class tracked_sink final : public generation_sink {
 public:
  tracked_sink(actor_engine& owner, request_id id, std::shared_ptr<generation_sink> inner)
      : owner_(owner), id_(id), inner_(std::move(inner)) {}
  void on_delta(const generation_delta& delta) override { inner_->on_delta(delta); }
  void on_final(const generation_final& final_event) override;

 private:
  actor_engine& owner_;
  request_id id_;
  std::shared_ptr<generation_sink> inner_;
};

class actor_engine final : public inference_engine {
 public:
  actor_engine(std::unique_ptr<backend> model, std::shared_ptr<const tokenizer> tok, chat_template chat,
               const engine_options& options)
      : config_(make_caf_config(options.actor_threads)), system_(config_) {
    if (!tok) throw std::invalid_argument("engine: no tokenizer");
    // Every id the model can sample must be one the tokenizer can decode, and every prompt id the
    // tokenizer checks must be one the model can embed.
    if (tok->vocab_size() != model->config().vocab_size)
      throw std::invalid_argument("engine: the tokenizer has " + std::to_string(tok->vocab_size()) +
                                  " tokens but the model's vocabulary is " +
                                  std::to_string(model->config().vocab_size));
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

    auto context = std::make_shared<request_context>();
    context->tok = std::move(tok);
    context->chat = std::make_shared<const chat_template>(std::move(chat));
    context->max_model_len = sched.max_model_len;
    kv_manager_ = spawn_kv_manager(system_, kv.num_blocks, kv.block_size, options.prefix_caching);
    executor_ = spawn_executor(system_, std::shared_ptr<backend>(std::move(model)));
    scheduler_ = spawn_scheduler(system_, sched, kv.block_size, kv.num_blocks, options.pipelining, kv_manager_, executor_);
    context->scheduler = scheduler_;
    context_ = std::move(context);
  }

  ~actor_engine() override {
    {
      std::lock_guard lock(mutex_);
      for (auto& [id, actor] : live_) caf::anon_send(actor, cancel_atom::value);
    }
    wait_idle();
    for (const caf::actor& actor : {scheduler_, kv_manager_, executor_})
      caf::anon_send_exit(actor, caf::exit_reason::user_shutdown);
    // ~actor_system then waits for every actor to terminate.
  }

  request_id submit(generation_params params, std::shared_ptr<generation_sink> sink) override {
    const request_id id = next_id_.fetch_add(1) + 1;
    auto tracked = std::make_shared<tracked_sink>(*this, id, std::move(sink));
    {
      std::lock_guard lock(mutex_);
      live_.emplace(id, caf::actor{});  // counted from now on; the handle follows
    }
    // Not under the lock: a request that fails at once retires (and locks) before spawn returns.
    caf::actor actor = spawn_request(system_, context_, id, std::move(params), std::move(tracked));
    std::lock_guard lock(mutex_);
    if (const auto found = live_.find(id); found != live_.end()) found->second = std::move(actor);
    return id;
  }

  void cancel(request_id id) override {
    std::lock_guard lock(mutex_);
    if (const auto found = live_.find(id); found != live_.end() && found->second)
      caf::anon_send(found->second, cancel_atom::value);
  }

  engine_stats stats() override {
    engine_stats out;
    caf::scoped_actor self{system_};
    const auto timeout = std::chrono::seconds(30);
    self->request(scheduler_, timeout, stats_atom::value)
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
            },
            [](caf::error&) {});
    self->request(kv_manager_, timeout, stats_atom::value)
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
            [](caf::error&) {});
    return out;
  }

  void wait_idle() override {
    std::unique_lock lock(mutex_);
    idle_.wait(lock, [this] { return live_.empty(); });
  }

  void retire(request_id id) {
    std::lock_guard lock(mutex_);
    live_.erase(id);
    if (live_.empty()) idle_.notify_all();
  }

 private:
  caf::actor_system_config config_;
  caf::actor_system system_;
  std::shared_ptr<const request_context> context_;
  caf::actor kv_manager_, executor_, scheduler_;
  std::atomic<request_id> next_id_{0};
  std::mutex mutex_;
  std::condition_variable idle_;
  std::unordered_map<request_id, caf::actor> live_;
};

void tracked_sink::on_final(const generation_final& final_event) {
  inner_->on_final(final_event);
  owner_.retire(id_);
}

}  // namespace

std::unique_ptr<inference_engine> inference_engine::create(std::unique_ptr<backend> model, std::shared_ptr<const tokenizer> tok,
                                       chat_template chat, const engine_options& options) {
  if (!model) throw std::invalid_argument("engine: no backend");
  return std::make_unique<actor_engine>(std::move(model), std::move(tok), std::move(chat), options);
}

}  // namespace inflight
