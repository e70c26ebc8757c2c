// engine_node: an engine (scheduler, KV manager, executor) in a process of its own, published through CAF's
// middleman behind its front actor (node_actor.cpp), for gateways to route requests to.
#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <caf/openssl/all.hpp>

#include <stdexcept>
#include <thread>

#include "cluster_actors.hpp"
#include "inflight/cluster.hpp"
#include "inflight/tokenizer.hpp"

namespace inflight {

namespace {

using namespace inflight::engine;
using namespace inflight::cluster;

struct node_system_config : caf::actor_system_config {
  node_system_config(const cluster_link_options& link, int threads) { configure_cluster_system(*this, link, threads); }
};

class node_impl final : public engine_node {
 public:
  node_impl(std::unique_ptr<backend> model, std::shared_ptr<const tokenizer> tok, const engine_options& engine,
            const node_options& options)
      : config_(options.link, engine.actor_threads), system_(config_) {
    if (!tok) throw std::invalid_argument("node: no tokenizer");
    gate_ = std::make_shared<node_gate>();
    const std::string model_name = engine.model_name.empty() ? model->config().name : engine.model_name;
    actors_ = spawn_engine_actors(system_, std::move(model), *tok, engine, gate_);

    front_config front;
    front.secret = options.link.secret;
    front.card = options.card;
    front.card.name = model_name;
    front.card.context_length = actors_.max_model_len;
    front.card.block_size = actors_.block_size;
    front.report_interval = options.report_interval;
    front.tls = options.link.tls();
    front.log = options.log;
    front.on_failure = options.on_failure;
    try {
      for (const std::string& gateway : options.join) front.join.push_back(parse_host_port(gateway));
    } catch (...) {
      stop_engine_actors(actors_);
      throw;
    }
    // The name carries the port, which is known only once published when options.port is 0: gateways
    // never see the front before it is published, and it learns its name before any gateway can ask.
    front.name = options.name;
    front_ = spawn_node_front(system_, actors_, gate_, front);
    auto published = options.link.tls()
                         ? caf::openssl::publish(front_, options.port, options.host.c_str(), /*reuse=*/true)
                         : system_.middleman().publish(front_, options.port, options.host.c_str(), /*reuse=*/true);
    if (!published) {
      caf::anon_send_exit(front_, caf::exit_reason::user_shutdown);
      stop_engine_actors(actors_);
      throw std::runtime_error("cannot listen on " + options.host + ":" + std::to_string(options.port) + ": " +
                               system_.render(published.error()));
    }
    port_ = *published;
    name_ = options.name.empty() ? options.host + ":" + std::to_string(port_) : options.name;
    caf::scoped_actor self{system_};  // a local sender: the front takes names and drain orders from no one else
    self->send(front_, name_atom::value, name_);
  }

  ~node_impl() override {
    caf::anon_send_exit(front_, caf::exit_reason::user_shutdown);
    stop_engine_actors(actors_);
  }

  uint16_t port() const override { return port_; }
  std::string name() const override { return name_; }

  void drain(std::chrono::milliseconds grace) override {
    {
      caf::scoped_actor self{system_};
      self->send(front_, drain_atom::value);
    }
    const auto until = std::chrono::steady_clock::now() + grace;
    while (std::chrono::steady_clock::now() < until) {
      const engine_stats now = gather_engine_stats(system_, actors_);
      if ((now.waiting == 0 && now.running == 0) || !now.failure.empty()) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    // Grace is over: end what still runs (each request actor gets its final event, finish_reason cancelled),
    // and give the final events a moment to leave.
    {
      caf::scoped_actor self{system_};
      self->send(actors_.scheduler, cancel_atom::value);
    }
    for (int i = 0; i < 100; ++i) {
      const engine_stats now = gather_engine_stats(system_, actors_);
      if (now.waiting == 0 && now.running == 0) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }

  engine_stats stats() override { return gather_engine_stats(system_, actors_); }

 private:
  node_system_config config_;
  caf::actor_system system_;
  std::shared_ptr<node_gate> gate_;
  engine_actors actors_;
  caf::actor front_;
  uint16_t port_ = 0;
  std::string name_;
};

}  // namespace

std::unique_ptr<engine_node> engine_node::create(std::unique_ptr<backend> model, std::shared_ptr<const tokenizer> tok,
                                                 chat_template /*chat: the gateways render prompts*/,
                                                 const engine_options& engine, const node_options& options) {
  if (!model) throw std::invalid_argument("node: no backend");
  if (const std::string problem = check_cluster_link_options(options.link); !problem.empty())
    throw std::invalid_argument(problem);
  if (options.report_interval.count() <= 0) throw std::invalid_argument("node: the report interval must be positive");
  return std::make_unique<node_impl>(std::move(model), std::move(tok), engine, options);
}

}  // namespace inflight
