// inference_engine::create: the engine in this process. Its own actor system runs the three long-lived
// actors (engine_actors.cpp) and one request actor per submit; the engine object holds no scheduling state,
// only the book of requests in flight (for cancel and wait_idle).
#include "inflight/engine.hpp"

#include <caf/all.hpp>

#include <algorithm>
#include <atomic>
#include <stdexcept>

#include "engine_actors.hpp"
#include "inflight/tokenizer.hpp"
#include "request_book.hpp"

namespace inflight {

const char* to_string(request_error error) {
  switch (error) {
    case request_error::none: return "none";
    case request_error::invalid_request: return "invalid_request";
    case request_error::queue_full: return "queue_full";
    case request_error::internal: return "internal";
    case request_error::unavailable: return "unavailable";
    case request_error::node_failed: return "node_failed";
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

class actor_engine final : public inference_engine {
 public:
  actor_engine(std::unique_ptr<backend> model, std::shared_ptr<const tokenizer> tok, chat_template chat,
               const engine_options& options)
      : config_(make_caf_config(options.actor_threads)), system_(config_) {
    if (!tok) throw std::invalid_argument("engine: no tokenizer");
    const std::string name = options.model_name.empty() ? model->config().name : options.model_name;
    actors_ = spawn_engine_actors(system_, std::move(model), *tok, options);
    auto context = std::make_shared<request_context>();
    context->tok = tok;
    context->chat = std::make_shared<const chat_template>(std::move(chat));
    context->constraints = actors_.constraints;
    context->host_sampling = !actors_.device_sampling;
    context->max_model_len = actors_.max_model_len;
    context->scheduler = actors_.scheduler;
    context_ = std::move(context);
    model_ = std::make_shared<const served_model>(served_model{name, std::move(tok), actors_.max_model_len});
  }

  ~actor_engine() override {
    book_.cancel_all();
    book_.wait_idle();
    stop_engine_actors(actors_);
    // ~actor_system then waits for every actor to terminate.
  }

  request_id submit(generation_params params, std::shared_ptr<generation_sink> sink) override {
    const request_id id = next_id_.fetch_add(1) + 1;
    auto tracked = book_.track(id, std::move(sink));
    // Not under a lock: a request that fails at once retires before spawn returns.
    book_.attach(id, spawn_request(system_, context_, id, std::move(params), std::move(tracked)));
    return id;
  }

  void cancel(request_id id) override { book_.cancel(id); }
  engine_stats stats() override { return gather_engine_stats(system_, actors_); }
  void wait_idle() override { book_.wait_idle(); }
  std::shared_ptr<const served_model> model() const override { return model_; }

 private:
  caf::actor_system_config config_;
  caf::actor_system system_;
  engine_actors actors_;
  std::shared_ptr<const request_context> context_;
  std::shared_ptr<const served_model> model_;
  std::atomic<request_id> next_id_{0};
  request_book book_;
};

}  // namespace

std::unique_ptr<inference_engine> inference_engine::create(std::unique_ptr<backend> model, std::shared_ptr<const tokenizer> tok,
                                       chat_template chat, const engine_options& options) {
  if (!model) throw std::invalid_argument("engine: no backend");
  return std::make_unique<actor_engine>(std::move(model), std::move(tok), std::move(chat), options);
}

}  // namespace inflight
