// CAF 0.17-style `inspect` overloads for the cluster protocol (cluster_protocol.hpp), so that the middleman
// can carry its structs between gateway and nodes. Included only by the actor translation units.
#pragma once

#include <caf/meta/load_callback.hpp>
#include <caf/meta/type_name.hpp>

#include <vector>

#include "inflight/cluster_protocol.hpp"

namespace inflight {

// CAF 0.17 has no std::optional and no enum vectors of its own: kinds travel as bytes, the optional flags as
// (present, value) pairs, put back after loading.
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, tokenizer_config& x) {
  std::vector<uint8_t> kinds(x.kinds.size());
  for (size_t i = 0; i < kinds.size(); ++i) kinds[i] = uint8_t(x.kinds[i]);
  bool has_add_bos = x.add_bos.has_value(), add_bos = x.add_bos.value_or(false);
  bool has_add_eos = x.add_eos.has_value(), add_eos = x.add_eos.value_or(false);
  auto restore = caf::meta::load_callback([&]() -> caf::error {
    x.kinds.resize(kinds.size());
    for (size_t i = 0; i < kinds.size(); ++i) x.kinds[i] = token_kind(kinds[i]);
    x.add_bos = has_add_bos ? std::optional<bool>(add_bos) : std::nullopt;
    x.add_eos = has_add_eos ? std::optional<bool>(add_eos) : std::nullopt;
    return caf::none;
  });
  return f(caf::meta::type_name("inflight::tokenizer_config"), x.pre, x.tokens, kinds, x.merges, x.bos_id, x.eos_id,
           x.eot_id, x.eom_id, has_add_bos, add_bos, has_add_eos, add_eos, restore);
}

}  // namespace inflight

namespace inflight::cluster {

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, model_card& x) {
  return f(caf::meta::type_name("inflight::cluster::model_card"), x.name, x.fingerprint, x.tokenizer,
           x.has_chat_template, x.chat_template, x.context_length, x.block_size);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, hello& x) {
  return f(caf::meta::type_name("inflight::cluster::hello"), x.protocol_version, x.gateway_name, x.gateway_nonce);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, challenge& x) {
  return f(caf::meta::type_name("inflight::cluster::challenge"), x.protocol_version, x.refusal, x.has_secret,
           x.node_nonce, x.node_proof);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, proof& x) {
  return f(caf::meta::type_name("inflight::cluster::proof"), x.gateway_proof);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, welcome& x) {
  return f(caf::meta::type_name("inflight::cluster::welcome"), x.refusal, x.node_name, x.card, x.report_interval_ms);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, node_load& x) {
  return f(caf::meta::type_name("inflight::cluster::node_load"), x.sequence, x.draining, x.failure, x.waiting,
           x.running, x.kv_blocks_total, x.kv_blocks_used, x.kv_blocks_cached, x.kv_blocks_free,
           x.prefix_queried_tokens, x.prefix_hit_tokens, x.steps, x.generated_tokens, x.prompt_tokens_computed,
           x.preemptions, x.finished, x.cancelled, x.aborted);
}

}  // namespace inflight::cluster
