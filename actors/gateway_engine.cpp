// make_gateway: the inference_engine of `inflight serve --node ...`. No model runs here: each submit
// spawns a request actor (tokenizing, detokenizing, stop strings, as in-process) that asks the router for a
// node and streams token ids from that node's scheduler. The router keeps the links to the nodes and a
// snapshot (cluster_view) that stats(), model() and nodes() read without touching an actor.
#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <caf/openssl/all.hpp>

#include <openssl/rand.h>

#include <atomic>
#include <cstdio>
#include <stdexcept>

#include "cluster_actors.hpp"
#include "inflight/cluster.hpp"
#include "request_book.hpp"

namespace inflight {

namespace {

using namespace inflight::engine;
using namespace inflight::cluster;

struct gateway_system_config : caf::actor_system_config {
  gateway_system_config(const cluster_link_options& link, int threads) { configure_cluster_system(*this, link, threads); }
};

// Request ids start at a random 64-bit offset: a node keys sequences by id, and a restarted gateway must
// not reuse the ids of its predecessor's sequences that the node is still cancelling.
uint64_t random_id_base() {
  uint64_t base = 0;
  if (RAND_bytes(reinterpret_cast<unsigned char*>(&base), sizeof base) != 1) base = uint64_t(std::time(nullptr)) << 32;
  return base & ~uint64_t(0xffffffff);  // room for 2^32 requests before the high bits change
}

void log_to_stderr(const std::string& line) { std::fprintf(stderr, "inflight gateway: %s\n", line.c_str()); }

// Ends a request at once, for submits the gateway cannot route (no node has been met yet).
void refuse(generation_sink& sink, request_error error, std::string message) {
  generation_final final_event;
  final_event.reason = finish_reason::error;
  final_event.error = error;
  final_event.message = std::move(message);
  sink.on_final(final_event);
}

class gateway_engine final : public inference_engine {
 public:
  explicit gateway_engine(const gateway_options& options)
      : config_(options.link, options.actor_threads), system_(config_), next_id_(random_id_base()) {
    router_config router;
    router.nodes = options.nodes;
    router.gateway_name = options.name;
    router.secret = options.link.secret;
    router.tls = options.link.tls();
    router.routing.prefix_affinity = options.prefix_affinity;
    router.routing.report_timeout = options.report_timeout;
    router.reconnect_min = options.reconnect_min;
    router.reconnect_max = options.reconnect_max;
    router.connect_timeout = options.connect_timeout;
    router.model_name = options.model_name;
    router.view = view_;
    router.log = options.log ? options.log : log_to_stderr;
    router_ = spawn_router(system_, std::move(router));
    if (options.accept_joins) {
      auto published = options.link.tls()
                           ? caf::openssl::publish(router_, options.join_port, options.join_host.c_str(), true)
                           : system_.middleman().publish(router_, options.join_port, options.join_host.c_str(), true);
      if (!published) {
        caf::anon_send_exit(router_, caf::exit_reason::user_shutdown);
        throw std::runtime_error("cannot open the cluster port " + options.join_host + ":" +
                                 std::to_string(options.join_port) + ": " + system_.render(published.error()));
      }
      cluster_port_ = *published;
    }
  }

  ~gateway_engine() override {
    book_.cancel_all();
    book_.wait_idle();
    caf::anon_send_exit(router_, caf::exit_reason::user_shutdown);
  }

  request_id submit(generation_params params, std::shared_ptr<generation_sink> sink) override {
    const request_id id = next_id_.fetch_add(1) + 1;
    auto tracked = book_.track(id, std::move(sink));
    const std::shared_ptr<const request_context> context = view_->context();
    if (!context) {
      refuse(*tracked, request_error::unavailable, "no engine node has connected to the gateway yet");
      return id;
    }
    book_.attach(id, spawn_request(system_, context, id, std::move(params), std::move(tracked)));
    return id;
  }

  void cancel(request_id id) override { book_.cancel(id); }
  void wait_idle() override { book_.wait_idle(); }
  std::shared_ptr<const served_model> model() const override { return view_->model(); }
  std::vector<node_status> nodes() const override { return view_->nodes(); }
  bool is_gateway() const override { return true; }
  uint16_t cluster_port() const { return cluster_port_; }

  // The nodes' latest reports, summed: what /metrics shows for the engine.
  engine_stats stats() override {
    engine_stats out;
    for (const node_status& node : view_->nodes()) {
      if (node.state != "up" && node.state != "draining") continue;
      out.waiting += node.waiting;
      out.running += node.running;
      out.kv_blocks_total += node.kv_blocks_total;
      out.kv_blocks_used += node.kv_blocks_used;
      out.kv_blocks_cached += node.kv_blocks_cached;
      out.kv_blocks_free += node.kv_blocks_total - node.kv_blocks_used;
      out.prefix_queried_tokens += node.prefix_queried_tokens;
      out.prefix_hit_tokens += node.prefix_hit_tokens;
      out.generated_tokens += node.generated_tokens;
      out.steps += node.steps;
    }
    return out;
  }

 private:
  gateway_system_config config_;
  caf::actor_system system_;
  std::shared_ptr<cluster_view> view_ = std::make_shared<cluster_view>();
  caf::actor router_;
  std::atomic<request_id> next_id_;
  uint16_t cluster_port_ = 0;
  request_book book_;
};

}  // namespace

std::unique_ptr<inference_engine> make_gateway(const gateway_options& options) {
  if (const std::string problem = check_cluster_link_options(options.link); !problem.empty())
    throw std::invalid_argument(problem);
  for (const gateway_node& node : options.nodes) {
    parse_host_port(node.address);  // throws std::invalid_argument naming it
    if (!(node.weight > 0)) throw std::invalid_argument("node " + node.address + ": the weight must be positive");
  }
  if (options.nodes.empty() && !options.accept_joins)
    throw std::invalid_argument("a gateway needs nodes: list them, or open a cluster port for nodes to join");
  return std::make_unique<gateway_engine>(options);
}

uint16_t gateway_cluster_port(const inference_engine& gateway) {
  const auto* cluster = dynamic_cast<const gateway_engine*>(&gateway);
  return cluster ? cluster->cluster_port() : 0;
}

}  // namespace inflight
