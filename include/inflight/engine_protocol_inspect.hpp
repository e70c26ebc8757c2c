// CAF 0.17-style `inspect` overloads for the engine protocol (engine_protocol.hpp), so that CAF can put the
// structs in messages and, for the ones that cross nodes, on the wire (docs/caf-0.17.md §3). Included only
// by the actor translation units: everything else sees the plain structs.
#pragma once

#include <caf/error.hpp>
#include <caf/meta/load_callback.hpp>
#include <caf/meta/type_name.hpp>
#include <caf/sec.hpp>

#include <algorithm>
#include <vector>

#include "inflight/engine_protocol.hpp"

namespace inflight {

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, token_logprob& x) {
  return f(caf::meta::type_name("inflight::token_logprob"), x.token, x.logprob);
}

// Only the num_top alternatives in use travel (a token event without logprobs carries none of the 20).
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, sample_result& x) {
  const size_t used = size_t(std::clamp(x.num_top, 0, max_top_logprobs));
  std::vector<token_logprob> top(x.top.begin(), x.top.begin() + std::ptrdiff_t(used));
  auto restore_top = caf::meta::load_callback([&]() -> caf::error {
    if (top.size() > size_t(max_top_logprobs)) return caf::make_error(caf::sec::invalid_argument);
    x.top = {};
    std::copy(top.begin(), top.end(), x.top.begin());
    x.num_top = int32_t(top.size());
    return caf::none;
  });
  return f(caf::meta::type_name("inflight::sample_result"), x.token, x.logprob, top, restore_top);
}

// CAF 0.17 has no std::optional support: the seed travels as (has_seed, seed) and is put back after loading;
// the logit bias travels as two lists (ids, values), zipped back after loading.
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, sampling_params& x) {
  bool has_seed = x.seed.has_value();
  uint64_t seed = x.seed.value_or(0);
  std::vector<int32_t> bias_ids;
  std::vector<float> bias_values;
  for (const auto& [id, value] : x.logit_bias) {
    bias_ids.push_back(id);
    bias_values.push_back(value);
  }
  auto restore = caf::meta::load_callback([&]() -> caf::error {
    x.seed = has_seed ? std::optional<uint64_t>(seed) : std::nullopt;
    if (bias_ids.size() != bias_values.size()) return caf::make_error(caf::sec::invalid_argument);
    x.logit_bias.clear();
    for (size_t i = 0; i < bias_ids.size(); ++i) x.logit_bias.emplace_back(bias_ids[i], bias_values[i]);
    return caf::none;
  });
  return f(caf::meta::type_name("inflight::sampling_params"), x.temperature, x.top_k, x.top_p, x.min_p,
           x.repetition_penalty, x.presence_penalty, x.frequency_penalty, has_seed, seed, x.top_logprobs,
           x.logprobs, bias_ids, bias_values, restore);
}

// The kind travels as its number; an unknown one (a newer peer) is refused on load.
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, output_constraint& x) {
  uint8_t kind = uint8_t(x.type);
  auto restore_kind = caf::meta::load_callback([&]() -> caf::error {
    if (kind > uint8_t(output_constraint::kind::regex)) return caf::make_error(caf::sec::invalid_argument);
    x.type = output_constraint::kind(kind);
    return caf::none;
  });
  return f(caf::meta::type_name("inflight::output_constraint"), kind, x.text, restore_kind);
}

}  // namespace inflight

namespace inflight::engine {

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, scheduled_chunk& x) {
  return f(caf::meta::type_name("inflight::engine::scheduled_chunk"), x.id, x.start_position, x.token_offset,
           x.num_tokens, x.block_offset, x.num_blocks, x.compute_logits);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, step_plan& x) {
  return f(caf::meta::type_name("inflight::engine::step_plan"), x.step, x.chunks, x.token_ids, x.block_ids,
           x.admitted, x.preempted, x.aborted, x.deferred);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, kv_new_sequence& x) {
  return f(caf::meta::type_name("inflight::engine::kv_new_sequence"), x.id, x.tokens, x.max_tokens);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, kv_updates& x) {
  return f(caf::meta::type_name("inflight::engine::kv_updates"), x.sampled_step, x.sampled, x.released, x.added);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, step_request& x) {
  return f(caf::meta::type_name("inflight::engine::step_request"), x.token_budget, x.max_running, x.may_admit,
           x.speculative, x.running, x.waiting);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, sequence_spec& x) {
  return f(caf::meta::type_name("inflight::engine::sequence_spec"), x.id, x.prompt, x.max_tokens, x.stop_token_ids,
           x.priority);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, sequence_event& x) {
  return f(caf::meta::type_name("inflight::engine::sequence_event"), x.id, x.token, x.finished, x.prompt_tokens,
           x.generated_tokens);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, token_event& x) {
  return f(caf::meta::type_name("inflight::engine::token_event"), x.event, x.has_sample, x.sample, x.error);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, sequence_submit& x) {
  return f(caf::meta::type_name("inflight::engine::sequence_submit"), x.spec, x.sampling, x.constraint);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, sampler_setup& x) {
  return f(caf::meta::type_name("inflight::engine::sampler_setup"), x.id, x.sampling, x.prompt, x.constraint);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, sequence_failure& x) {
  return f(caf::meta::type_name("inflight::engine::sequence_failure"), x.id, x.message);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, step_result& x) {
  return f(caf::meta::type_name("inflight::engine::step_result"), x.step, x.sampled, x.samples, x.forward_seconds,
           x.sampling_seconds, x.constraint_seconds, x.constrained_samples, x.error, x.failed);
}

}  // namespace inflight::engine
