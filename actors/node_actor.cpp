// An engine node's front actor: the one actor a node publishes. Gateways (their routers and request
// actors) talk to it; the scheduler, KV manager and executor stay behind it.
//
//   hello        a gateway router says hello: answered with a challenge (or a refusal naming both
//                protocol versions)
//   proof        its proof of the secret: answered with a welcome (the model card) or a refusal; from then on
//                the gateway's CAF node is admitted by the node_gate and the router gets load reports
//   sequence_submit, cancel_atom   from an admitted gateway's request actors: delegated to the scheduler (the
//                reply and the token events go straight back to the request actor); while draining, a
//                submit is answered `draining` so that the gateway routes it elsewhere
//   report_atom  its own timer: stats from the scheduler and the KV manager -> node_load to every router
//   drain_atom   from engine_node: leave (no new sequences; routers hear it at once)
//   join         when told to join gateways: dial each, send (join_atom, version, name, self), and dial
//                again with backoff whenever that link is lost (a restarted gateway is joined again)
//   down_msg     a router gone: no more reports to it (its request actors' sequences are cancelled by the
//                scheduler, which monitors them); an engine actor gone: the node has failed (on_failure)
#include <caf/all.hpp>

#include <algorithm>
#include <map>

#include "cluster_actors.hpp"
#include "cluster_auth.hpp"

namespace inflight::cluster {

namespace {

using namespace inflight::engine;

struct pending_handshake {
  std::string gateway_name, gateway_nonce, node_nonce;
};

struct joined_gateway {
  std::string host;
  uint16_t port = 0;
  caf::actor router;         // while linked
  uint64_t dial = 0;         // tag of the dial in progress (answers to older ones are ignored)
  std::chrono::milliseconds backoff{0};
  std::string refusal;       // the gateway's last reason for not taking us (logged when it changes)
};

struct front_state {
  engine_actors engine;
  std::shared_ptr<node_gate> gate;
  front_config config;
  std::map<caf::actor_addr, pending_handshake> pending;  // hello answered, proof awaited; by router
  std::map<caf::actor_addr, caf::actor> subscribers;     // welcomed routers
  std::vector<joined_gateway> joined;
  uint64_t next_dial = 0;
  uint64_t reports = 0;
  bool draining = false;
  bool named = false;
  std::string failure;
  static inline const char* name = "inflight.node_front";
};

using front_actor = caf::stateful_actor<front_state>;

void log(front_actor* self, const std::string& line) {
  if (self->state.config.log) self->state.config.log(line);
}

bool from_admitted(front_actor* self) {
  const caf::strong_actor_ptr& sender = self->current_sender();
  return sender && (sender->node() == self->node() || self->state.gate->admits(sender->node()));
}

// Sends the latest load to every subscriber (or to `only`).
void push_report(front_actor* self, const caf::actor& only = caf::actor{}) {
  front_state& st = self->state;
  const auto timeout = std::chrono::seconds(5);
  self->request(st.engine.scheduler, timeout, stats_atom::value)
      .then([self, only, timeout](const scheduler_report& scheduler) {
        self->request(self->state.engine.kv_manager, timeout, stats_atom::value)
            .then([self, only, scheduler](const kv_report& kv) {
              front_state& st = self->state;
              node_load load;
              load.sequence = ++st.reports;
              load.draining = st.draining;
              load.failure = !st.failure.empty() ? st.failure : scheduler.failure;
              load.waiting = scheduler.counters.waiting;
              load.running = scheduler.counters.running;
              load.kv_blocks_total = kv.cache.num_blocks;
              load.kv_blocks_used = kv.cache.used_blocks;
              load.kv_blocks_cached = kv.cache.cached_blocks;
              load.kv_blocks_free = kv.cache.free_blocks;
              load.prefix_queried_tokens = kv.cache.prefix_queried_tokens;
              load.prefix_hit_tokens = kv.cache.prefix_hit_tokens;
              load.steps = scheduler.executed_steps;
              load.generated_tokens = scheduler.counters.generated_tokens;
              load.prompt_tokens_computed = kv.planner.prompt_tokens_computed;
              load.preemptions = kv.planner.preemptions;
              load.finished = scheduler.counters.finished;
              load.cancelled = scheduler.counters.cancelled;
              load.aborted = scheduler.counters.aborted;
              if (only) {
                self->send(only, load);
                return;
              }
              for (const auto& [address, router] : st.subscribers) self->send(router, load);
            },
            // No report this time (the KV manager's failure, if that is it, arrives as a down message).
            [](caf::error&) {});
      },
      [](caf::error&) {});
}

// The node's engine cannot go on: fail loudly once; the owner exits, which closes every link, so that
// gateways fail over.
void engine_failed(front_actor* self, const std::string& why) {
  front_state& st = self->state;
  if (!st.failure.empty()) return;
  st.failure = why;
  log(self, "the engine failed: " + why);
  push_report(self);
  if (st.config.on_failure) st.config.on_failure(why);
}

void dial_gateway(front_actor* self, size_t index) {
  front_state& st = self->state;
  joined_gateway& gateway = st.joined[index];
  gateway.dial = ++st.next_dial;
  spawn_dialer(self->system(), gateway.host, gateway.port, st.config.tls, st.config.connect_timeout,
               caf::actor_cast<caf::actor>(self), gateway.dial);
}

void redial_later(front_actor* self, size_t index) {
  front_state& st = self->state;
  joined_gateway& gateway = st.joined[index];
  gateway.backoff = std::clamp(gateway.backoff * 2, st.config.rejoin_min, st.config.rejoin_max);
  self->delayed_send(self, gateway.backoff, redial_atom::value, uint64_t(index), gateway.dial);
}

// The join did not lead to a served gateway (refused, unanswered, no handshake followed, or the gateway
// dropped us after the handshake): forget that link and join again after rejoin_after_refusal (the gateway
// would most likely say the same at once).
void rejoin_later(front_actor* self, size_t index) {
  front_state& st = self->state;
  joined_gateway& gateway = st.joined[index];
  // demonitor drops every monitor on the router, the subscribers' one too: keep it while it serves us.
  if (gateway.router && !st.subscribers.count(gateway.router.address())) self->demonitor(gateway.router);
  gateway.router = caf::actor{};
  gateway.dial = ++st.next_dial;  // answers about the dropped link are ignored from now on
  gateway.backoff = st.config.rejoin_after_refusal;
  self->delayed_send(self, gateway.backoff, redial_atom::value, uint64_t(index), gateway.dial);
}

// A router (of a gateway process) no longer uses us: no reports to it, and the gate closes once no router
// of that process is left.
void drop_subscriber(front_actor* self, const caf::actor_addr& router) {
  front_state& st = self->state;
  const auto found = st.subscribers.find(router);
  if (found == st.subscribers.end()) return;
  const caf::node_id gateway = found->second.node();
  st.subscribers.erase(found);
  const bool others = std::any_of(st.subscribers.begin(), st.subscribers.end(),
                                  [&](const auto& entry) { return entry.second.node() == gateway; });
  if (!others) st.gate->revoke(gateway);
}

caf::behavior node_front(front_actor* self, engine_actors engine, std::shared_ptr<node_gate> gate, front_config config) {
  front_state& st = self->state;
  st.engine = std::move(engine);
  st.gate = std::move(gate);
  st.config = std::move(config);
  for (const caf::actor& actor : {st.engine.scheduler, st.engine.kv_manager, st.engine.executor}) self->monitor(actor);
  self->set_down_handler([self](caf::down_msg& down) {
    front_state& st = self->state;
    const std::string reason = self->system().render(down.reason);
    if (down.source == st.engine.scheduler.address()) return engine_failed(self, "the scheduler stopped: " + reason);
    if (down.source == st.engine.kv_manager.address()) return engine_failed(self, "the KV manager stopped: " + reason);
    if (down.source == st.engine.executor.address()) return engine_failed(self, "the executor stopped: " + reason);
    if (st.subscribers.count(down.source)) {
      // The scheduler cancels the gateway's sequences itself (it monitors each requester).
      drop_subscriber(self, down.source);
      log(self, "a gateway went away (" + self->system().render(down.reason) + ")");
    }
    st.pending.erase(down.source);
    for (size_t i = 0; i < st.joined.size(); ++i) {
      joined_gateway& gateway = st.joined[i];
      if (gateway.router && gateway.router.address() == down.source) {
        gateway.router = caf::actor{};
        log(self, "lost the gateway at " + gateway.host + ":" + std::to_string(gateway.port) + "; joining again");
        gateway.backoff = std::chrono::milliseconds(0);
        redial_later(self, i);
      }
    }
  });
  // Gateways are joined once the node knows its name (name_atom, sent right after publishing).
  for (const auto& [host, port] : st.config.join) st.joined.push_back({host, port, {}, 0, {}, {}});
  self->send(self, report_atom::value);

  return {
      [self](const hello& greeting) -> challenge {
        front_state& st = self->state;
        challenge answer;
        answer.protocol_version = spoken_protocol_version();
        if (greeting.protocol_version != spoken_protocol_version()) {
          answer.refusal = "protocol version mismatch: the gateway speaks cluster protocol " +
                           std::to_string(greeting.protocol_version) + ", this node speaks " +
                           std::to_string(spoken_protocol_version());
          log(self, "refused gateway '" + greeting.gateway_name + "': " + answer.refusal);
          return answer;
        }
        if (!st.failure.empty()) {
          answer.refusal = "the node's engine has failed: " + st.failure;
          return answer;
        }
        const caf::strong_actor_ptr& sender = self->current_sender();
        if (!sender) {
          answer.refusal = "anonymous hello";
          return answer;
        }
        // Bounded: a peer that says hello over and over cannot grow this map without end.
        if (st.pending.size() >= 256) st.pending.erase(st.pending.begin());
        pending_handshake& pending = st.pending[sender->address()];
        pending = {greeting.gateway_name, greeting.gateway_nonce, random_nonce()};
        answer.has_secret = !st.config.secret.empty();
        answer.node_nonce = pending.node_nonce;
        answer.node_proof = make_proof(st.config.secret, proof_role::node, pending.gateway_nonce, pending.node_nonce,
                                       caf::to_string(sender->node()));
        return answer;
      },
      [self](const proof& evidence) -> welcome {
        front_state& st = self->state;
        welcome answer;
        const caf::strong_actor_ptr& sender = self->current_sender();
        const auto found = sender ? st.pending.find(sender->address()) : st.pending.end();
        if (found == st.pending.end()) {
          answer.refusal = "no handshake in progress (say hello first)";
          return answer;
        }
        const pending_handshake pending = found->second;
        st.pending.erase(found);
        const std::string expected = make_proof(st.config.secret, proof_role::gateway, pending.gateway_nonce,
                                                pending.node_nonce, caf::to_string(self->node()));
        if (st.config.secret.empty() && !evidence.gateway_proof.empty())
          answer.refusal = "the gateway has a cluster secret but this node has none";
        else if (!st.config.secret.empty() && evidence.gateway_proof.empty())
          answer.refusal = "this node requires a cluster secret and the gateway gave none";
        else if (!proofs_equal(expected, evidence.gateway_proof))
          answer.refusal = "wrong cluster secret";
        if (!answer.refusal.empty()) {
          log(self, "refused gateway '" + pending.gateway_name + "': " + answer.refusal);
          return answer;
        }
        caf::actor router = caf::actor_cast<caf::actor>(sender);
        st.gate->admit(router.node());
        self->monitor(router);
        st.subscribers[router.address()] = router;
        answer.node_name = st.config.name;
        answer.card = st.config.card;
        answer.report_interval_ms = int32_t(st.config.report_interval.count());
        log(self, "serving gateway '" + pending.gateway_name + "'");
        push_report(self, router);
        return answer;
      },
      // The scheduler answers the request actor itself (delegate keeps the sender and the request id).
      [self](sequence_submit& submit) -> caf::result<caf::message> {
        front_state& st = self->state;
        if (!from_admitted(self)) return caf::make_message(int32_t(submit_status::unavailable));
        if (st.draining) return caf::make_message(int32_t(submit_status::draining));
        if (!st.failure.empty()) return caf::make_message(int32_t(submit_status::unavailable));
        return self->delegate(st.engine.scheduler, std::move(submit));
      },
      [self](cancel_atom, sequence_id id) {
        if (from_admitted(self)) self->delegate(self->state.engine.scheduler, cancel_atom::value, id);
      },
      [self](stopped_atom, sequence_id id) {
        if (from_admitted(self)) self->delegate(self->state.engine.scheduler, stopped_atom::value, id);
      },
      [self](report_atom) {
        if (!local_sender(self)) return;  // its own timer only: a peer's would start another loop
        push_report(self);
        self->delayed_send(self, self->state.config.report_interval, report_atom::value);
      },
      [self](name_atom, const std::string& name) {
        if (!local_sender(self) || self->state.named) return;
        self->state.named = true;
        self->state.config.name = name;
        for (size_t i = 0; i < self->state.joined.size(); ++i) dial_gateway(self, i);
      },
      [self](drain_atom) {
        if (!local_sender(self)) return;
        self->state.draining = true;
        log(self, "draining: no new sequences; the running ones finish");
        push_report(self);
      },
      [self](dialed_atom, uint64_t tag, const caf::actor& router, const std::string& error) {
        front_state& st = self->state;
        if (!local_sender(self)) return;  // only our dialer knows the tags
        for (size_t i = 0; i < st.joined.size(); ++i) {
          joined_gateway& gateway = st.joined[i];
          if (gateway.dial != tag) continue;
          const std::string where = gateway.host + ":" + std::to_string(gateway.port);
          if (!router) {
            if (gateway.backoff.count() == 0) log(self, "cannot reach the gateway at " + where + ": " + error + "; retrying");
            return redial_later(self, i);
          }
          gateway.router = router;
          gateway.backoff = std::chrono::milliseconds(0);
          self->monitor(router);
          // The router answers with "" or why it will not take us; the handshake (hello) follows from it.
          self->request(router, std::chrono::seconds(10), join_atom::value, spoken_protocol_version(), st.config.name,
                        caf::actor_cast<caf::actor>(self))
              .then(
                  [self, where, i, tag = gateway.dial](const std::string& refusal) {
                    front_state& st = self->state;
                    if (st.joined[i].dial != tag) return;
                    if (refusal.empty()) {
                      log(self, "joined the gateway at " + where);
                      st.joined[i].refusal.clear();
                      // The gateway's handshake follows; should it not complete, join again.
                      self->delayed_send(self, st.config.join_handshake_timeout, joincheck_atom::value, uint64_t(i), tag);
                      return;
                    }
                    if (refusal != st.joined[i].refusal)
                      log(self, "the gateway at " + where + " refused to let this node join: " + refusal + "; retrying");
                    st.joined[i].refusal = refusal;
                    rejoin_later(self, i);
                  },
                  [self, where, i, tag = gateway.dial](caf::error& failure) {
                    if (self->state.joined[i].dial != tag) return;
                    log(self, "the gateway at " + where + " did not answer the join: " + self->system().render(failure));
                    rejoin_later(self, i);
                  });
          return;
        }
      },
      [self](bye_atom) {
        front_state& st = self->state;
        const caf::strong_actor_ptr& sender = self->current_sender();
        if (!sender || !st.subscribers.count(sender->address())) return;
        drop_subscriber(self, sender->address());
        log(self, "a gateway dropped this node");
        for (size_t i = 0; i < st.joined.size(); ++i)
          if (st.joined[i].router && st.joined[i].router.address() == sender->address()) rejoin_later(self, i);
      },
      [self](joincheck_atom, uint64_t index, uint64_t tag) {
        front_state& st = self->state;
        if (!local_sender(self) || index >= st.joined.size() || st.joined[index].dial != tag) return;
        joined_gateway& gateway = st.joined[index];
        if (!gateway.router || st.subscribers.count(gateway.router.address())) return;  // served, or already lost
        log(self, "no handshake followed the join at " + gateway.host + ":" + std::to_string(gateway.port) +
                      "; joining again");
        rejoin_later(self, index);
      },
      [self](redial_atom, uint64_t index, uint64_t tag) {
        front_state& st = self->state;
        if (!local_sender(self)) return;
        if (index < st.joined.size() && st.joined[index].dial == tag && !st.joined[index].router) dial_gateway(self, index);
      },
  };
}

}  // namespace

caf::actor spawn_node_front(caf::actor_system& system, engine_actors engine, std::shared_ptr<node_gate> gate,
                            front_config config) {
  return system.spawn(node_front, std::move(engine), std::move(gate), std::move(config));
}

}  // namespace inflight::cluster
