// The values a gateway and its engine nodes exchange over CAF's middleman (docs/ARCHITECTURE.md,
// "Several machines"), besides the engine's own sequence_submit / token_event (engine_protocol.hpp):
//
//   gateway router ── hello ──▶ node front ── challenge ──▶ router ── proof ──▶ front ── welcome ──▶ router
//   node front ── node_load (every report interval, and at once when it starts draining) ──▶ router
//   node ── (join_atom, version, name, front) ──▶ gateway entry      a node joining a running gateway
//
// Plain structs with no CAF in sight, so the routing policy and its unit tests use them directly;
// cluster_protocol_inspect.hpp adds the `inspect` overloads, included by the actor translation units only.
//
// Compatibility: `hello` and `challenge` keep their layout in every version, so that a gateway and a node
// of different versions can always tell each other which versions they speak; everything after them may
// change with protocol_version.
#pragma once

#include <cstdint>
#include <string>

#include "inflight/tokenizer.hpp"

namespace inflight::cluster {

// Bumped whenever a message that crosses between gateway and node changes (2: sequence_submit carries the
// request's output constraint; 3: sampling_params carry the logit bias).
constexpr uint32_t protocol_version = 3;

// What a gateway needs of the model to serve it without the weights: it tokenizes, renders chat
// templates and detokenizes itself, so only token ids and sampling parameters cross the wire.
struct model_card {
  std::string name;         // what clients put in "model"
  std::string fingerprint;  // the GGUF's identity (model_fingerprint): every node of a cluster must match
  tokenizer_config tokenizer;
  bool has_chat_template = false;
  std::string chat_template;   // tokenizer.chat_template, when has_chat_template
  int32_t context_length = 0;  // prompt + max_tokens at most (the engine's max_model_len)
  int32_t block_size = 0;      // KV-cache block size: prefix affinity hashes prompts in blocks of this size
};

// gateway -> node (a request, answered with a challenge).
struct hello {
  uint32_t protocol_version = 0;
  std::string gateway_name;   // for the node's log
  std::string gateway_nonce;  // fresh per handshake (cluster_auth.hpp)
};

// node -> gateway. A non-empty refusal ends the handshake (it names both versions on a mismatch).
struct challenge {
  uint32_t protocol_version = 0;
  std::string refusal;
  bool has_secret = false;  // the node was given a cluster secret
  std::string node_nonce;
  std::string node_proof;   // empty without a secret
};

// gateway -> node (a request, answered with a welcome).
struct proof {
  std::string gateway_proof;  // empty without a secret
};

// node -> gateway: the gateway is now a subscriber of the node's load reports and may submit sequences.
struct welcome {
  std::string refusal;  // non-empty: wrong secret, or a secret on one side only
  std::string node_name;
  model_card card;
  int32_t report_interval_ms = 0;
};

// node -> every subscribed gateway, on a timer: what the routing policy weighs, and what /v1/nodes shows.
// Its arrival is also the gateway's heartbeat of the node's engine.
struct node_load {
  uint64_t sequence = 0;   // counts reports
  bool draining = false;   // the node is leaving: it takes no new sequences and finishes the running ones
  std::string failure;     // non-empty: the node's engine failed (the node exits)
  int32_t waiting = 0, running = 0;
  int32_t kv_blocks_total = 0, kv_blocks_used = 0, kv_blocks_cached = 0, kv_blocks_free = 0;
  int64_t prefix_queried_tokens = 0, prefix_hit_tokens = 0;
  int64_t steps = 0, generated_tokens = 0, prompt_tokens_computed = 0, preemptions = 0;
  int64_t finished = 0, cancelled = 0, aborted = 0;
};

}  // namespace inflight::cluster
