#include "inflight/batch_generator.hpp"

#include <algorithm>
#include <chrono>
#include <deque>
#include <optional>
#include <stdexcept>
#include <string>

namespace inflight {

namespace {

struct running_sequence {
  size_t request_index = 0;
  std::vector<int32_t> tokens;     // prompt then generated; capacity reserved so spans stay valid
  int32_t prompt_length = 0;
  int32_t num_computed = 0;        // tokens whose K/V are in the cache
  std::vector<int32_t> blocks;
  std::optional<sampler> token_sampler;
};

int32_t blocks_for(int64_t tokens, int32_t block_size) { return int32_t((tokens + block_size - 1) / block_size); }

}  // namespace

batch_generator::batch_generator(backend& model, std::vector<int32_t> end_of_generation_ids,
                                 batch_generator_options options)
    : backend_(model), end_of_generation_ids_(std::move(end_of_generation_ids)), options_(options) {
  if (options_.max_step_tokens <= 0 || options_.max_step_tokens > model.max_step_tokens()) {
    options_.max_step_tokens = model.max_step_tokens();
  }
  options_.max_batch_sequences = std::clamp(options_.max_batch_sequences, 1, model.max_step_sequences());
}

std::vector<generation_output> batch_generator::run(std::span<const generation_request> requests,
                                                    const token_callback& on_token) {
  const model_config& config = backend_.config();
  const kv_cache_geometry geometry = backend_.kv_geometry();
  for (size_t i = 0; i < requests.size(); ++i) {
    const auto& request = requests[i];
    const std::string which = "request " + std::to_string(i) + ": ";
    if (request.prompt.empty()) throw std::invalid_argument(which + "empty prompt");
    if (request.max_tokens <= 0) throw std::invalid_argument(which + "max_tokens must be > 0");
    const int64_t total = int64_t(request.prompt.size()) + request.max_tokens;
    if (total > config.context_length) {
      throw std::invalid_argument(which + "prompt + max_tokens (" + std::to_string(total) +
                                  ") exceeds the context length " + std::to_string(config.context_length));
    }
    if (blocks_for(total, geometry.block_size) > geometry.num_blocks) {
      throw std::invalid_argument(which + "needs more KV blocks than the cache has");
    }
    if (const char* error = validate(request.sampling); *error) throw std::invalid_argument(which + error);
    for (const int32_t token : request.prompt) {
      if (token < 0 || token >= config.vocab_size) {
        throw std::invalid_argument(which + "token id " + std::to_string(token) + " is outside the vocabulary");
      }
    }
  }

  std::vector<generation_output> outputs(requests.size());
  std::vector<int32_t> free_blocks(size_t(geometry.num_blocks));
  for (int32_t b = 0; b < geometry.num_blocks; ++b) free_blocks[size_t(b)] = geometry.num_blocks - 1 - b;
  std::deque<size_t> waiting;
  for (size_t i = 0; i < requests.size(); ++i) waiting.push_back(i);
  std::vector<running_sequence> running;
  running.reserve(size_t(options_.max_batch_sequences));
  std::vector<sequence_chunk> chunks;
  chunks.reserve(size_t(options_.max_batch_sequences));
  std::vector<size_t> chunk_sequence;  // running index of each chunk
  std::vector<float> logits(size_t(options_.max_batch_sequences) * size_t(config.vocab_size));

  while (!waiting.empty() || !running.empty()) {
    // Admit waiting requests while there is room for another sequence and its whole KV footprint.
    while (!waiting.empty() && int32_t(running.size()) < options_.max_batch_sequences) {
      const auto& request = requests[waiting.front()];
      const int32_t needed = blocks_for(int64_t(request.prompt.size()) + request.max_tokens, geometry.block_size);
      if (needed > int32_t(free_blocks.size())) break;
      running_sequence sequence;
      sequence.request_index = waiting.front();
      sequence.tokens.reserve(request.prompt.size() + size_t(request.max_tokens));
      sequence.tokens = request.prompt;
      sequence.prompt_length = int32_t(request.prompt.size());
      for (int32_t b = 0; b < needed; ++b) {
        sequence.blocks.push_back(free_blocks.back());
        free_blocks.pop_back();
      }
      // Output storage is reserved here so that a step appends without allocating.
      outputs[waiting.front()].tokens.reserve(size_t(request.max_tokens));
      if (request.sampling.logprobs || request.sampling.top_logprobs > 0) {
        outputs[waiting.front()].logprobs.reserve(size_t(request.max_tokens));
      }
      sequence.token_sampler.emplace(request.sampling, config.vocab_size);
      sequence.token_sampler->set_prompt(request.prompt);
      running.push_back(std::move(sequence));
      waiting.pop_front();
    }

    // Plan the step: decodes first (one token each), then prefill chunks within the token budget.
    chunks.clear();
    chunk_sequence.clear();
    int32_t budget = options_.max_step_tokens;
    bool has_prefill = false;
    for (int pass = 0; pass < 2; ++pass) {
      for (size_t s = 0; s < running.size() && budget > 0; ++s) {
        running_sequence& sequence = running[s];
        const int32_t pending = int32_t(sequence.tokens.size()) - sequence.num_computed;
        const bool is_decode = sequence.num_computed >= sequence.prompt_length;
        if (pending <= 0 || is_decode != (pass == 0)) continue;
        const int32_t take = std::min(pending, budget);
        sequence_chunk chunk;
        chunk.tokens = std::span<const int32_t>(sequence.tokens).subspan(size_t(sequence.num_computed), size_t(take));
        chunk.start_position = sequence.num_computed;
        chunk.block_table = sequence.blocks;
        chunk.compute_logits = take == pending;
        chunks.push_back(chunk);
        chunk_sequence.push_back(s);
        budget -= take;
        has_prefill |= !is_decode;
      }
    }

    const auto started = std::chrono::steady_clock::now();
    backend_.forward(chunks, logits);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    ++stats_.steps;
    (has_prefill ? stats_.prefill_seconds : stats_.decode_seconds) += seconds;

    // Apply the step: advance computed counts, sample where logits were produced.
    size_t logits_row = 0;
    for (size_t c = 0; c < chunks.size(); ++c) {
      running_sequence& sequence = running[chunk_sequence[c]];
      sequence.num_computed += int32_t(chunks[c].tokens.size());
      if (sequence.num_computed <= sequence.prompt_length) stats_.prompt_tokens += int64_t(chunks[c].tokens.size());
      if (!chunks[c].compute_logits) continue;
      const auto& request = requests[sequence.request_index];
      auto& output = outputs[sequence.request_index];
      const sample_result sample = sequence.token_sampler->sample(logits.data() + logits_row++ * config.vocab_size);
      sequence.tokens.push_back(sample.token);
      output.tokens.push_back(sample.token);
      if (request.sampling.logprobs || request.sampling.top_logprobs > 0) output.logprobs.push_back(sample);
      ++stats_.generated_tokens;
      if (on_token) on_token(sequence.request_index, sample.token, sample);
      const bool is_end = !request.ignore_eos &&
                          std::find(end_of_generation_ids_.begin(), end_of_generation_ids_.end(), sample.token) !=
                              end_of_generation_ids_.end();
      if (is_end) {
        output.reason = finish_reason::stop;
      } else if (int32_t(output.tokens.size()) >= request.max_tokens) {
        output.reason = finish_reason::length;
      } else {
        continue;
      }
      free_blocks.insert(free_blocks.end(), sequence.blocks.rbegin(), sequence.blocks.rend());
      sequence.blocks.clear();
      sequence.num_computed = -1;  // marks it finished; removed below
    }
    std::erase_if(running, [](const running_sequence& s) { return s.num_computed < 0; });
  }
  return outputs;
}

}  // namespace inflight
