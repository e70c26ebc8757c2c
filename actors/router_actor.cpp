// The gateway's router actor: a thin shell over routing_policy that owns the links to the engine nodes.
//
//   per node: dial (cluster_dialer) -> hello -> challenge (version, node's proof checked) -> proof ->
//             welcome (model card checked against the cluster's) -> up; node_load reports while up
//   link lost (down_msg: closed, or CAF's heartbeat timed out): down, dial again after a backoff that
//             doubles from reconnect_min to reconnect_max
//   handshake refused (wrong secret, version or model): refused, tried again at reconnect_max
//   (a joined node is not dialed: it joins again itself, after a lost link or when no handshake followed
//   its join)
//   route_atom (prefix hashes, excluded nodes)  from a request actor: (index, name, front) or (-1, why, none)
//   routed_atom (index)                         a request is done with its node
//   join_atom (version, name, front)            a node joining (inflight node --join): handshake with it
//   tick_atom  (every 100 ms): silent nodes, and a fresh snapshot for /v1/nodes and /metrics (cluster_view)
//
// The first node welcomed gives the cluster its model card: the tokenizer and chat template are built from
// it, and from then on a node whose card has another fingerprint is refused.
#include <caf/all.hpp>

#include <algorithm>

#include "cluster_actors.hpp"
#include "cluster_auth.hpp"
#include "inflight/tokenizer.hpp"

namespace inflight::cluster {

namespace {

// Joins by new names are bounded: each adds a link that is kept (listed as down) after it goes.
constexpr long max_joined_nodes = 256;

using namespace inflight::engine;
using clock = std::chrono::steady_clock;

struct node_link {
  std::string host;  // empty for a joined node (it dials us)
  uint16_t port = 0;
  bool joined = false;
  caf::actor front;  // once dialed (or joined)
  uint64_t attempt = 0;  // tags this link's dial and handshake: answers to an older attempt are ignored
  std::chrono::milliseconds backoff{0};
  std::string error;      // why it is down or refused
  bool handshaking = false;
};

struct router_state {
  router_config config;
  std::unique_ptr<routing_policy> policy;
  std::vector<node_link> links;  // parallel to policy->nodes()
  std::string cluster_fingerprint;  // of the first node's model card
  std::shared_ptr<const request_context> context;
  uint64_t next_attempt = 0;
  static inline const char* name = "inflight.router";
};

using router_actor = caf::stateful_actor<router_state>;

void log(router_actor* self, const std::string& line) {
  if (self->state.config.log) self->state.config.log(line);
}

const std::string& name_of(router_actor* self, int32_t node) { return self->state.policy->nodes()[size_t(node)].name; }

void publish_snapshot(router_actor* self) {
  router_state& st = self->state;
  const auto now = clock::now();
  std::vector<node_status> nodes;
  for (size_t i = 0; i < st.links.size(); ++i) {
    const routed_node& n = st.policy->nodes()[i];
    node_status s;
    s.name = n.name;
    s.state = to_string(n.state);
    if (n.state == node_state::up && !st.policy->eligible(int32_t(i), now)) s.state = "unresponsive";
    s.error = st.links[i].error;
    s.joined = st.links[i].joined;
    s.weight = n.weight;
    s.waiting = n.load.waiting;
    s.running = n.load.running;
    s.kv_blocks_total = n.load.kv_blocks_total;
    s.kv_blocks_used = n.load.kv_blocks_used;
    s.kv_blocks_cached = n.load.kv_blocks_cached;
    s.prefix_queried_tokens = n.load.prefix_queried_tokens;
    s.prefix_hit_tokens = n.load.prefix_hit_tokens;
    s.generated_tokens = n.load.generated_tokens;
    s.steps = n.load.steps;
    s.in_flight = n.in_flight;
    s.routed_total = n.routed_total;
    s.affinity_routed = n.affinity_routed;
    s.last_report_ms = n.load.sequence == 0 ? -1
                                            : std::chrono::duration_cast<std::chrono::milliseconds>(now - n.heard).count();
    nodes.push_back(std::move(s));
  }
  st.config.view->set_nodes(std::move(nodes));
}

void dial(router_actor* self, int32_t node);

// The link is unusable: mark it, and (for a node we dial) try again after the backoff.
void link_lost(router_actor* self, int32_t node, node_state state, const std::string& why) {
  router_state& st = self->state;
  node_link& link = st.links[size_t(node)];
  const bool was_up = st.policy->nodes()[size_t(node)].state == node_state::up ||
                      st.policy->nodes()[size_t(node)].state == node_state::draining;
  if (link.front) {
    // The node may have welcomed us already (we refuse its card, or its welcome came too late): tell it, so
    // that it stops reporting to us and, if it joined, joins again later.
    self->send(link.front, bye_atom::value);
    self->demonitor(link.front);
  }
  link.front = caf::actor{};
  link.handshaking = false;
  if (why != link.error || was_up) log(self, "node " + name_of(self, node) + " is " + to_string(state) + ": " + why);
  link.error = why;
  st.policy->set_state(node, state);
  publish_snapshot(self);
  if (link.joined) return;  // it will join again
  link.backoff = state == node_state::refused ? st.config.reconnect_max
                                              : std::clamp(link.backoff * 2, st.config.reconnect_min, st.config.reconnect_max);
  self->delayed_send(self, link.backoff, redial_atom::value, uint64_t(node), link.attempt);
}

// Takes the first node's model card as the cluster's: the tokenizer, chat template and context length of
// every request from now on. Returns why a card cannot be used ("" when it can).
std::string adopt_card(router_actor* self, const model_card& card) {
  router_state& st = self->state;
  if (!st.cluster_fingerprint.empty()) {
    if (card.fingerprint == st.cluster_fingerprint) return {};
    return "it serves a different model ('" + card.name + "', fingerprint " + card.fingerprint.substr(0, 12) +
           ") from the cluster's (fingerprint " + st.cluster_fingerprint.substr(0, 12) + ")";
  }
  std::shared_ptr<const tokenizer> tok;
  try {
    tok = tokenizer::from_config(card.tokenizer);
  } catch (const std::exception& error) {
    return std::string("its tokenizer cannot be built here: ") + error.what();
  }
  auto context = std::make_shared<request_context>();
  context->tok = tok;
  context->chat = std::make_shared<const chat_template>(
      card.has_chat_template ? std::optional<std::string>(card.chat_template) : std::nullopt);
  // The gateway compiles a request's constraint only to refuse a bad one at once; the node compiles again.
  context->constraints = std::make_shared<const constraint_compiler>(*tok, tok->vocab_size());
  context->max_model_len = card.context_length;
  context->router = caf::actor_cast<caf::actor>(self);
  context->prefix_block_size = std::max(1, card.block_size);
  context->prefix_max_blocks = st.config.routing.max_prefix_blocks;
  auto model = std::make_shared<const served_model>(
      served_model{st.config.model_name.empty() ? card.name : st.config.model_name, tok, card.context_length});
  st.cluster_fingerprint = card.fingerprint;
  st.context = context;
  st.config.view->set_model(std::move(model), std::move(context));
  log(self, "serving model '" + card.name + "' (context " + std::to_string(card.context_length) + " tokens)");
  return {};
}

// hello -> challenge -> proof -> welcome with the node's front actor.
void handshake(router_actor* self, int32_t node, caf::actor front) {
  router_state& st = self->state;
  node_link& link = st.links[size_t(node)];
  if (link.front && link.front != front) self->demonitor(link.front);
  link.front = front;
  link.handshaking = true;
  const uint64_t attempt = link.attempt;
  self->monitor(front);
  const std::string gateway_nonce = random_nonce();
  self->request(front, st.config.handshake_timeout, hello{spoken_protocol_version(), st.config.gateway_name, gateway_nonce})
      .then(
          [self, node, attempt, front, gateway_nonce](const challenge& answer) {
            router_state& st = self->state;
            node_link& link = st.links[size_t(node)];
            if (link.attempt != attempt) return;
            if (!answer.refusal.empty()) return link_lost(self, node, node_state::refused, answer.refusal);
            if (answer.protocol_version != spoken_protocol_version())
              return link_lost(self, node, node_state::refused,
                               "protocol version mismatch: the node speaks cluster protocol " +
                                   std::to_string(answer.protocol_version) + ", this gateway speaks " +
                                   std::to_string(spoken_protocol_version()));
            const std::string& secret = st.config.secret;
            if (!secret.empty() && !answer.has_secret)
              return link_lost(self, node, node_state::refused, "the node has no cluster secret but this gateway has one");
            // Prove ours even when theirs is wrong, so that the node logs the mismatch too.
            const bool node_proven =
                secret.empty() || proofs_equal(make_proof(secret, proof_role::node, gateway_nonce, answer.node_nonce,
                                                          caf::to_string(self->node())),
                                               answer.node_proof);
            const proof evidence{
                make_proof(secret, proof_role::gateway, gateway_nonce, answer.node_nonce, caf::to_string(front.node()))};
            self->request(front, st.config.handshake_timeout, evidence)
                .then(
                    [self, node, attempt, node_proven, answer](const welcome& hi) {
                      router_state& st = self->state;
                      if (st.links[size_t(node)].attempt != attempt) return;
                      if (!hi.refusal.empty()) return link_lost(self, node, node_state::refused, "the node refused: " + hi.refusal);
                      if (!node_proven)
                        return link_lost(self, node, node_state::refused,
                                         answer.has_secret && st.config.secret.empty()
                                             ? "the node requires a cluster secret and this gateway has none"
                                             : "wrong cluster secret (the node's proof does not match)");
                      if (const std::string problem = adopt_card(self, hi.card); !problem.empty())
                        return link_lost(self, node, node_state::refused, problem);
                      node_link& link = st.links[size_t(node)];
                      link.handshaking = false;
                      link.backoff = std::chrono::milliseconds(0);
                      link.error.clear();
                      st.policy->set_state(node, node_state::up);
                      log(self, "node " + name_of(self, node) + " is up" +
                                    (hi.node_name.empty() || hi.node_name == name_of(self, node) ? "" : " (it calls itself " + hi.node_name + ")"));
                      publish_snapshot(self);
                    },
                    [self, node, attempt](caf::error& failure) {
                      if (self->state.links[size_t(node)].attempt != attempt) return;
                      link_lost(self, node, node_state::down, "handshake failed: " + self->system().render(failure));
                    });
          },
          [self, node, attempt](caf::error& failure) {
            if (self->state.links[size_t(node)].attempt != attempt) return;
            link_lost(self, node, node_state::down, "no answer to hello: " + self->system().render(failure));
          });
}

void dial(router_actor* self, int32_t node) {
  router_state& st = self->state;
  node_link& link = st.links[size_t(node)];
  link.attempt = ++st.next_attempt;
  if (st.policy->nodes()[size_t(node)].state != node_state::refused) st.policy->set_state(node, node_state::connecting);
  spawn_dialer(self->system(), link.host, link.port, st.config.tls, st.config.connect_timeout,
               caf::actor_cast<caf::actor>(self), link.attempt);
}

caf::behavior router(router_actor* self, router_config config) {
  router_state& st = self->state;
  st.config = std::move(config);
  st.policy = std::make_unique<routing_policy>(st.config.routing);
  for (const gateway_node& node : st.config.nodes) {
    const auto [host, port] = parse_host_port(node.address);
    const int32_t index = st.policy->add_node(node.address, node.weight);
    if (size_t(index) < st.links.size()) continue;  // listed twice
    node_link link;
    link.host = host;
    link.port = port;
    st.links.push_back(link);
  }
  for (size_t i = 0; i < st.links.size(); ++i) dial(self, int32_t(i));
  self->set_down_handler([self](caf::down_msg& down) {
    router_state& st = self->state;
    for (size_t i = 0; i < st.links.size(); ++i) {
      if (st.links[i].front && st.links[i].front.address() == down.source) {
        st.links[i].attempt = ++st.next_attempt;  // whatever the handshake was waiting for will not come
        return link_lost(self, int32_t(i), node_state::down, "link lost (" + self->system().render(down.reason) + ")");
      }
    }
  });
  self->send(self, tick_atom::value);
  publish_snapshot(self);

  return {
      [self](dialed_atom, uint64_t attempt, const caf::actor& front, const std::string& error) {
        router_state& st = self->state;
        if (!local_sender(self)) return;  // only our dialer knows the attempt tags; a peer must not hand us a front
        for (size_t i = 0; i < st.links.size(); ++i) {
          if (st.links[i].attempt != attempt) continue;
          if (!front) return link_lost(self, int32_t(i), node_state::down, "cannot connect: " + error);
          return handshake(self, int32_t(i), front);
        }
      },
      [self](redial_atom, uint64_t node, uint64_t attempt) {
        router_state& st = self->state;
        if (!local_sender(self)) return;
        if (node < st.links.size() && st.links[node].attempt == attempt && !st.links[node].front) dial(self, int32_t(node));
      },
      [self](const node_load& load) {
        router_state& st = self->state;
        const caf::strong_actor_ptr& sender = self->current_sender();
        if (!sender) return;
        for (size_t i = 0; i < st.links.size(); ++i) {
          if (!st.links[i].front || st.links[i].front.address() != sender->address()) continue;
          const node_state before = st.policy->nodes()[i].state;
          if (before != node_state::up && before != node_state::draining) return;  // handshake not done
          st.policy->report(int32_t(i), load);
          if (before == node_state::up && st.policy->nodes()[i].state == node_state::draining)
            log(self, "node " + name_of(self, int32_t(i)) + " is draining");
          if (!load.failure.empty() && st.links[i].error != load.failure) {
            st.links[i].error = load.failure;
            log(self, "node " + name_of(self, int32_t(i)) + " reports an engine failure: " + load.failure);
          }
          return;
        }
      },
      [self](route_atom, const std::vector<uint64_t>& hashes, const std::vector<int32_t>& excluded)
          -> std::tuple<int32_t, std::string, caf::actor> {
        router_state& st = self->state;
        if (!local_sender(self)) return {-1, "not a local request", caf::actor{}};
        const auto chosen = st.policy->pick(hashes, excluded);
        if (!chosen) {
          std::string why = "no engine node is available";
          if (st.links.empty()) why += " (none configured or joined yet)";
          for (size_t i = 0; i < st.links.size(); ++i)
            why += (i == 0 ? " (" : ", ") + name_of(self, int32_t(i)) + ": " +
                   (std::find(excluded.begin(), excluded.end(), int32_t(i)) != excluded.end() ? std::string("failed for this request")
                                                                                           : std::string(to_string(st.policy->nodes()[i].state))) +
                   (i + 1 == st.links.size() ? ")" : "");
          return {-1, why, caf::actor{}};
        }
        return {chosen->node, name_of(self, chosen->node), st.links[size_t(chosen->node)].front};
      },
      [self](routed_atom, int32_t node) {
        if (local_sender(self) && node >= 0 && size_t(node) < self->state.links.size()) self->state.policy->release(node);
      },
      [self](join_atom, uint32_t version, const std::string& name, const caf::actor& front) -> std::string {
        router_state& st = self->state;
        if (version != spoken_protocol_version()) {
          const std::string why = "protocol version mismatch: the node speaks cluster protocol " + std::to_string(version) +
                                  ", this gateway speaks " + std::to_string(spoken_protocol_version());
          log(self, "refused node '" + name + "' joining: " + why);
          return why;
        }
        if (!front || name.empty()) return "a join needs the node's name and front actor";
        // A join never takes over a link that works: only a new name, or one whose link is gone, is taken
        // (a restarted node joins again once its old link's down message is in, and it retries until then).
        const std::optional<int32_t> existing = st.policy->find(name);
        if (existing) {
          const node_link& known = st.links[size_t(*existing)];
          if (!known.joined) return "a configured node of this name exists: " + name;
          const node_state state = st.policy->nodes()[size_t(*existing)].state;
          if (known.front && (known.handshaking || state == node_state::up || state == node_state::draining))
            return "a node of this name is already connected: " + name;
        }
        int32_t node = existing ? *existing : -1;
        if (node < 0 && std::count_if(st.links.begin(), st.links.end(), [](const node_link& l) { return l.joined; }) >=
                            max_joined_nodes) {
          // Full: take the slot of a joined node that is gone and holds none of our requests (nodes on port 0
          // get a new name at every restart, and names are not authenticated before the handshake).
          for (size_t i = 0; i < st.links.size() && node < 0; ++i) {
            const routed_node& n = st.policy->nodes()[i];
            if (st.links[i].joined && !st.links[i].front && n.in_flight == 0 &&
                (n.state == node_state::down || n.state == node_state::refused))
              node = int32_t(i);
          }
          if (node < 0) return "this gateway has " + std::to_string(max_joined_nodes) + " joined nodes already";
          st.policy->reassign(node, name);
          st.links[size_t(node)] = node_link{};
          st.links[size_t(node)].joined = true;
        }
        if (node < 0) node = st.policy->add_node(name);
        if (size_t(node) == st.links.size()) {
          node_link link;
          link.joined = true;
          st.links.push_back(link);
        }
        node_link& link = st.links[size_t(node)];
        st.policy->set_state(node, node_state::connecting);
        link.attempt = ++st.next_attempt;
        log(self, "node " + name + " is joining");
        handshake(self, node, front);
        return {};
      },
      [self](tick_atom) {
        router_state& st = self->state;
        if (!local_sender(self)) return;  // its own timer only: a peer's would start another loop
        const auto now = clock::now();
        for (size_t i = 0; i < st.links.size(); ++i) {
          const routed_node& n = st.policy->nodes()[i];
          if (n.state == node_state::up && !st.policy->eligible(int32_t(i), now) && st.links[i].error.empty()) {
            st.links[i].error = "no load report for " +
                                std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(now - n.heard).count()) + " ms";
            log(self, "node " + n.name + " is unresponsive: " + st.links[i].error);
          } else if (n.state == node_state::up && st.policy->eligible(int32_t(i), now) &&
                     st.links[i].error.starts_with("no load report")) {
            st.links[i].error.clear();
          }
        }
        publish_snapshot(self);
        self->delayed_send(self, std::chrono::milliseconds(100), tick_atom::value);
      },
  };
}

}  // namespace

caf::actor spawn_router(caf::actor_system& system, router_config config) {
  return system.spawn(router, std::move(config));
}

}  // namespace inflight::cluster
