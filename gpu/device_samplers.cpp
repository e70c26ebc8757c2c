#include "device_samplers.hpp"

#include <random>
#include <stdexcept>
#include <string>

#include "cuda_check.hpp"

namespace inflight::gpu {

namespace {

// The output block's arrays, in order, for max_rows rows.
struct output_offsets {
  size_t tokens, logprobs, num_top, top_tokens, top_logprobs, total;
  explicit output_offsets(int32_t max_rows) {
    const size_t rows = size_t(max_rows), top = rows * size_t(sampling_max_top_logprobs);
    tokens = 0;
    logprobs = tokens + sizeof(int32_t) * rows;
    num_top = logprobs + sizeof(float) * rows;
    top_tokens = num_top + sizeof(int32_t) * rows;
    top_logprobs = top_tokens + sizeof(int32_t) * top;
    total = top_logprobs + sizeof(float) * top;
  }
};

template <class T>
T* at(void* base, size_t offset) {
  return reinterpret_cast<T*>(static_cast<char*>(base) + offset);
}

}  // namespace

device_samplers::~device_samplers() {
  if (outputs_) cudaFree(outputs_);
  if (host_outputs_) cudaFreeHost(host_outputs_);
  if (penalty_offsets_) cudaFree(penalty_offsets_);
  if (penalty_entries_) cudaFree(penalty_entries_);
}

void device_samplers::allocate(int32_t max_rows, int32_t vocab_size) {
  max_rows_ = max_rows;
  vocab_size_ = vocab_size;
  const output_offsets offsets(max_rows);
  outputs_bytes_ = offsets.total;
  INFLIGHT_CUDA_CHECK(cudaMalloc(&outputs_, outputs_bytes_));
  INFLIGHT_CUDA_CHECK(cudaMallocHost(&host_outputs_, outputs_bytes_));
  output_views_ = {at<int32_t>(outputs_, offsets.tokens), at<float>(outputs_, offsets.logprobs),
                   at<int32_t>(outputs_, offsets.num_top), at<int32_t>(outputs_, offsets.top_tokens),
                   at<float>(outputs_, offsets.top_logprobs)};
  INFLIGHT_CUDA_CHECK(cudaMalloc(&penalty_offsets_, sizeof(int32_t) * size_t(max_rows + 1)));
  host_offsets_.resize(size_t(max_rows) + 1);
}

void device_samplers::add(uint64_t sequence, const sampling_params& params, std::span<const int32_t> prompt) {
  sequence_state state;
  device_sampling_params& p = state.params;
  p.temperature = params.temperature;
  p.top_k = params.top_k;
  p.top_p = params.top_p;
  p.min_p = params.min_p;
  p.repetition_penalty = params.repetition_penalty;
  p.presence_penalty = params.presence_penalty;
  p.frequency_penalty = params.frequency_penalty;
  p.num_top_logprobs = params.top_logprobs;
  p.want_logprob = params.logprobs || params.top_logprobs > 0;
  // Without a seed, a fresh one per sequence (as the CPU sampler draws from an unseeded engine).
  p.seed = params.seed ? *params.seed : std::random_device{}() * 0x9E3779B97F4A7C15ull + sequence;
  p.rng_step = 0;
  state.penalized = params.repetition_penalty != 1.0f || params.presence_penalty != 0.0f || params.frequency_penalty != 0.0f;
  if (state.penalized && params.repetition_penalty != 1.0f) {  // only repetition looks at the prompt
    for (const int32_t token : prompt) {
      if (state.index.emplace(token, int32_t(state.tokens.size())).second) {
        state.tokens.push_back(token);
        state.generated.push_back(0);
      }
    }
  }
  sequences_[sequence] = std::move(state);
}

void device_samplers::ensure_penalty_capacity(size_t entries) {
  if (entries <= penalty_capacity_) return;
  size_t capacity = std::max<size_t>(entries, penalty_capacity_ * 2);
  if (penalty_entries_) cudaFree(penalty_entries_);
  penalty_entries_ = nullptr;
  INFLIGHT_CUDA_CHECK(cudaMalloc(&penalty_entries_, capacity * (2 * sizeof(int32_t) + sizeof(float))));
  penalty_capacity_ = capacity;
}

void device_samplers::stage_rows(std::span<const uint64_t> samplers, void* staging) {
  if (samplers.size() > size_t(max_rows_)) throw std::invalid_argument("sampling: more rows than the backend allows");
  auto* rows = static_cast<device_sampling_params*>(staging);
  host_tokens_.clear();
  host_counts_.clear();
  staged_penalties_ = false;
  for (size_t r = 0; r < samplers.size(); ++r) {
    host_offsets_[r] = int32_t(host_tokens_.size());
    if (samplers[r] == 0) {
      rows[r] = device_sampling_params{0.0f};  // unused: greedy, nothing reported
      rows[r].want_logprob = 0;
      continue;
    }
    const auto found = sequences_.find(samplers[r]);
    if (found == sequences_.end())
      throw std::invalid_argument("sampling: no sampler for sequence " + std::to_string(samplers[r]));
    const sequence_state& state = found->second;
    rows[r] = state.params;
    if (state.penalized && !state.tokens.empty()) {
      staged_penalties_ = true;
      host_tokens_.insert(host_tokens_.end(), state.tokens.begin(), state.tokens.end());
      host_counts_.insert(host_counts_.end(), state.generated.begin(), state.generated.end());
    }
  }
  host_offsets_[samplers.size()] = int32_t(host_tokens_.size());
}

void device_samplers::pad_rows(int32_t used, int32_t padded, void* staging) const {
  auto* rows = static_cast<device_sampling_params*>(staging);
  for (int32_t r = used; r < padded; ++r) {
    rows[r] = device_sampling_params{0.0f};
    rows[r].want_logprob = 0;
  }
}

void device_samplers::enqueue(float* logits, int32_t rows, void* device_params, cudaStream_t stream) {
  device_penalty_lists penalties;
  if (staged_penalties_) {
    // Penalty lists vary in length from step to step: such steps never run as a CUDA graph (see
    // staged_penalties()), so these copies and a reallocation are allowed here.
    const size_t entries = host_tokens_.size();
    ensure_penalty_capacity(entries);
    int32_t* tokens = static_cast<int32_t*>(penalty_entries_);
    int32_t* counts = tokens + penalty_capacity_;
    float* saved = reinterpret_cast<float*>(counts + penalty_capacity_);
    INFLIGHT_CUDA_CHECK(cudaMemcpyAsync(penalty_offsets_, host_offsets_.data(), sizeof(int32_t) * size_t(rows + 1),
                                        cudaMemcpyHostToDevice, stream));
    INFLIGHT_CUDA_CHECK(cudaMemcpyAsync(tokens, host_tokens_.data(), sizeof(int32_t) * entries, cudaMemcpyHostToDevice, stream));
    INFLIGHT_CUDA_CHECK(cudaMemcpyAsync(counts, host_counts_.data(), sizeof(int32_t) * entries, cudaMemcpyHostToDevice, stream));
    // The host vectors must outlive the copies: they are only rewritten by the next stage_rows, after
    // read_results has synchronised the stream.
    penalties = {penalty_offsets_, tokens, counts, saved};
  }
  launch_sample(logits, rows, vocab_size_, static_cast<device_sampling_params*>(device_params), penalties, output_views_,
                stream);
}

void device_samplers::read_results(cudaStream_t stream, std::span<const uint64_t> samplers, std::span<sample_result> results) {
  INFLIGHT_CUDA_CHECK(cudaMemcpyAsync(host_outputs_, outputs_, outputs_bytes_, cudaMemcpyDeviceToHost, stream));
  INFLIGHT_CUDA_CHECK(cudaStreamSynchronize(stream));
  const output_offsets offsets(max_rows_);
  for (size_t r = 0; r < samplers.size(); ++r) {
    sample_result& out = results[r];
    out = sample_result{};
    if (samplers[r] == 0) continue;  // token -1: nothing sampled
    out.token = at<int32_t>(host_outputs_, offsets.tokens)[r];
    out.logprob = at<float>(host_outputs_, offsets.logprobs)[r];
    out.num_top = std::min(at<int32_t>(host_outputs_, offsets.num_top)[r], int32_t(max_top_logprobs));
    for (int32_t i = 0; i < out.num_top; ++i) {
      const size_t slot = r * size_t(sampling_max_top_logprobs) + size_t(i);
      out.top[size_t(i)] = {at<int32_t>(host_outputs_, offsets.top_tokens)[slot], at<float>(host_outputs_, offsets.top_logprobs)[slot]};
    }
  }
}

void device_samplers::advance(std::span<const uint64_t> samplers, std::span<const sample_result> results) {
  for (size_t r = 0; r < samplers.size(); ++r) {
    const auto found = sequences_.find(samplers[r]);
    if (found == sequences_.end()) continue;
    sequence_state& state = found->second;
    ++state.params.rng_step;
    if (!state.penalized || results[r].token < 0) continue;
    const int32_t token = results[r].token;
    const auto [entry, inserted] = state.index.emplace(token, int32_t(state.tokens.size()));
    if (inserted) {
      state.tokens.push_back(token);
      state.generated.push_back(0);
    }
    ++state.generated[size_t(entry->second)];
  }
}

}  // namespace inflight::gpu
