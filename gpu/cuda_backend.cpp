// The CUDA backend: one step = one pass over the layers with the kernels of gpu/*.cu and cuBLASLt GEMMs,
// all on one stream. The host only checks the step (step_layout, shared with the CPU backend), uploads its
// metadata in one copy, and reads back the sampled tokens (or, for forward(), the logits).
//
// Per layer (bf16 activations, [tokens][features]):
//   normed  = rms_norm(residual += proj)                  add_rms_norm (the first layer: residual = embedding)
//   qkv     = normed · W_qkvᵀ                             one GEMM for Q, K and V
//   rope_and_write_kv(qkv)                                rotates q, k in place, writes k, v to the paged cache
//   attn    = decode_attention | prefill_attention         from the cache only
//   proj    = attn · W_oᵀ
//   normed  = rms_norm(residual += proj)
//   act     = silu(gate) * up, gate_up = normed · W_guᵀ   one GEMM for gate and up
//   proj    = act · W_downᵀ
// then rms_norm(residual += proj) on each sequence's last token, the LM head (fp32 logits), and sampling.
//
// CUDA graphs: a decode-only step of B sequences runs as the graph captured for the smallest bucket >= B
// (1, 2, 4, 8, 16, 24, 32, ... up to max_step_sequences), its rows past B padded: token 0, slot -1 (no
// cache write), seq_len 0 (zero attention output), sampler row marked unused. Every buffer the graph reads
// lives at a fixed address and is rewritten by the upload before each replay.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "bf16_weights.hpp"
#include "cublaslt_gemm.hpp"
#include "cuda_check.hpp"
#include "decode_attention.hpp"
#include "device_samplers.hpp"
#include "inflight/cuda_backend.hpp"
#include "inflight/gguf.hpp"
#include "inflight/quant.hpp"
#include "inflight/step_layout.hpp"
#include "kv_budget.hpp"
#include "layer_kernels.hpp"
#include "prefill_attention.hpp"

namespace inflight {

namespace {

using bf16 = __nv_bfloat16;

// A device allocation freed on destruction.
class device_memory {
 public:
  device_memory() = default;
  explicit device_memory(size_t bytes) : bytes_(bytes) { INFLIGHT_CUDA_CHECK(cudaMalloc(&data_, bytes == 0 ? 16 : bytes)); }
  ~device_memory() {
    if (data_) cudaFree(data_);
  }
  device_memory(device_memory&& other) noexcept : data_(other.data_), bytes_(other.bytes_) { other.data_ = nullptr; }
  device_memory& operator=(device_memory&& other) noexcept {
    std::swap(data_, other.data_);
    std::swap(bytes_, other.bytes_);
    return *this;
  }
  template <class T>
  T* as() const {
    return static_cast<T*>(data_);
  }
  size_t bytes() const { return bytes_; }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

// Pinned host memory (the staging side of the per-step uploads and downloads).
class pinned_memory {
 public:
  pinned_memory() = default;
  explicit pinned_memory(size_t bytes) { INFLIGHT_CUDA_CHECK(cudaMallocHost(&data_, bytes == 0 ? 16 : bytes)); }
  ~pinned_memory() {
    if (data_) cudaFreeHost(data_);
  }
  pinned_memory(pinned_memory&& other) noexcept : data_(other.data_) { other.data_ = nullptr; }
  pinned_memory& operator=(pinned_memory&& other) noexcept {
    std::swap(data_, other.data_);
    return *this;
  }
  template <class T>
  T* as() const {
    return static_cast<T*>(data_);
  }

 private:
  void* data_ = nullptr;
};

// The backend's stream, destroyed with it (also when its constructor throws half-way).
class owned_stream {
 public:
  owned_stream() = default;
  ~owned_stream() {
    if (stream_) cudaStreamDestroy(stream_);
  }
  owned_stream(const owned_stream&) = delete;
  owned_stream& operator=(const owned_stream&) = delete;
  void create() { INFLIGHT_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking)); }
  operator cudaStream_t() const { return stream_; }

 private:
  cudaStream_t stream_ = nullptr;
};

struct layer_weights {
  device_memory attn_norm, qkv, attn_output, ffn_norm, gate_up, down;
};

// The per-step metadata, laid out identically in a pinned host buffer and a device buffer, so one copy
// uploads it. Offsets in bytes, each 16-byte aligned.
struct metadata_layout {
  size_t token_ids, positions, slots, query_start_loc, seq_lens, block_tables, logits_rows, tile_map, sampling, total;

  metadata_layout(int32_t tokens, int32_t sequences, int32_t blocks_per_sequence, int32_t tiles, size_t sampling_bytes) {
    size_t at = 0;
    auto take = [&at](size_t bytes) {
      const size_t offset = at;
      at += (bytes + 15) / 16 * 16;
      return offset;
    };
    token_ids = take(sizeof(int32_t) * size_t(tokens));
    positions = take(sizeof(int32_t) * size_t(tokens));
    slots = take(sizeof(int64_t) * size_t(tokens));
    query_start_loc = take(sizeof(int32_t) * size_t(sequences + 1));
    seq_lens = take(sizeof(int32_t) * size_t(sequences));
    block_tables = take(sizeof(int32_t) * size_t(sequences) * size_t(blocks_per_sequence));
    logits_rows = take(sizeof(int32_t) * size_t(sequences));
    tile_map = take(sizeof(int32_t) * 2 * size_t(tiles));
    sampling = take(sampling_bytes);
    total = at;
  }
};

// Decode batch sizes that get a CUDA graph: powers of two to 16, then steps of 8 (vLLM's capture sizes).
std::vector<int32_t> graph_buckets(int32_t max_sequences) {
  std::vector<int32_t> buckets;
  for (int32_t b = 1; b <= std::min(16, max_sequences); b *= 2) buckets.push_back(b);
  for (int32_t b = 24; b <= max_sequences; b += 8) buckets.push_back(b);
  if (buckets.empty() || buckets.back() != max_sequences) buckets.push_back(max_sequences);
  return buckets;
}

// A captured decode graph's shape: batch bucket, context bucket (the decode grid), sampling or logits out.
struct graph_key {
  int32_t batch = 0, context = 0;
  bool sample = false;
  auto operator<=>(const graph_key&) const = default;
};

class cuda_backend final : public backend {
 public:
  // Real weights: `visit` feeds bf16 tensors from the GGUF file; dummy: from a random source.
  cuda_backend(const model_config& config, const std::function<void(const gpu::bf16_tensor_visitor&)>& weight_source,
               std::vector<float> rope_freq_factors, const cuda_backend_options& options, std::string description)
      : config_(config), options_(options), description_(std::move(description)) {
    validate_options();
    INFLIGHT_CUDA_CHECK(cudaSetDevice(options.device));
    stream_.create();
    gemm_ = std::make_unique<gpu::cublaslt_gemm>();  // its workspace goes on the device just selected
    load_weights(weight_source);
    const std::vector<float> inverse = gpu::rope_inverse_frequencies(config_, rope_freq_factors);
    rope_inv_freq_ = device_memory(sizeof(float) * inverse.size());
    INFLIGHT_CUDA_CHECK(cudaMemcpy(rope_inv_freq_.as<float>(), inverse.data(), sizeof(float) * inverse.size(),
                                   cudaMemcpyHostToDevice));
    allocate_activations();
    allocate_kv_cache();
    layout_ = std::make_unique<step_layout>(step_limits{options_.max_step_tokens, options_.max_step_sequences,
                                                        config_.context_length, config_.vocab_size, geometry_,
                                                        max_blocks_per_sequence_});
  }

  ~cuda_backend() override {
    for (auto& [key, graph] : graphs_) cudaGraphExecDestroy(graph);
  }

  const model_config& config() const override { return config_; }
  kv_cache_geometry kv_geometry() const override { return geometry_; }
  int32_t max_step_tokens() const override { return options_.max_step_tokens; }
  int32_t max_step_sequences() const override { return options_.max_step_sequences; }

  void forward(std::span<const sequence_chunk> chunks, std::span<float> logits) override {
    layout_->prepare(chunks, int64_t(logits.size()));
    if (layout_->num_tokens() == 0) return;
    run_step(/*sample=*/false);
    const size_t values = size_t(layout_->num_logits()) * size_t(config_.vocab_size);
    INFLIGHT_CUDA_CHECK(cudaMemcpyAsync(logits.data(), logits_.as<float>(), sizeof(float) * values,
                                        cudaMemcpyDeviceToHost, stream_));
    INFLIGHT_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

  std::string describe() const override {
    cudaDeviceProp prop{};
    cudaGetDeviceProperties(&prop, options_.device);
    return std::string("cuda backend: ") + prop.name + ", " + description_ + ", weights " +
           std::to_string(weight_bytes_ >> 20) + " MiB bf16, KV cache " + std::to_string(geometry_.num_blocks) +
           " blocks x " + std::to_string(geometry_.block_size) + " tokens (" +
           std::to_string((size_t(geometry_.num_blocks) * kv_bytes_per_block()) >> 20) + " MiB), CUDA graphs " +
           (options_.cuda_graphs ? "on" : "off");
  }

  bool samples_on_device() const override { return true; }

  void add_sampler(uint64_t sequence, const sampling_params& params, std::span<const int32_t> prompt) override {
    samplers_.add(sequence, params, prompt);
  }
  void remove_sampler(uint64_t sequence) override { samplers_.remove(sequence); }

  void forward_and_sample(std::span<const sequence_chunk> chunks, std::span<const uint64_t> samplers,
                          std::span<sample_result> results) override {
    layout_->prepare(chunks);
    if (samplers.size() != size_t(layout_->num_logits()) || results.size() != samplers.size())
      throw std::invalid_argument("forward_and_sample: " + std::to_string(samplers.size()) + " samplers and " +
                                  std::to_string(results.size()) + " results for " +
                                  std::to_string(layout_->num_logits()) + " logits rows");
    if (layout_->num_tokens() == 0) return;
    samplers_.stage_rows(samplers, metadata_host_.as<char>() + metadata_->sampling);
    run_step(/*sample=*/true);
    samplers_.read_results(stream_, samplers, results);  // synchronises the stream
    samplers_.advance(samplers, results);
  }

 private:
  void validate_options() const {
    if (options_.max_step_tokens <= 0 || options_.max_step_sequences <= 0 || options_.block_size <= 0)
      throw std::invalid_argument("cuda backend: max_step_tokens, max_step_sequences and block_size must be > 0");
    if (options_.max_step_sequences > options_.max_step_tokens)
      throw std::invalid_argument("cuda backend: max_step_sequences exceeds max_step_tokens");
    if (config_.head_dim != 64 && config_.head_dim != 128)
      throw std::invalid_argument("cuda backend: head_dim " + std::to_string(config_.head_dim) +
                                  " is not supported (64 or 128)");
  }

  void load_weights(const std::function<void(const gpu::bf16_tensor_visitor&)>& weight_source) {
    layers_.resize(size_t(config_.num_layers));
    weight_source([this](const gpu::bf16_tensor& tensor) {
      device_memory memory(tensor.values.size() * sizeof(uint16_t));
      INFLIGHT_CUDA_CHECK(cudaMemcpy(memory.as<void>(), tensor.values.data(), memory.bytes(), cudaMemcpyHostToDevice));
      weight_bytes_ += memory.bytes();
      const std::string& name = tensor.name;
      if (name == "token_embd") embedding_ = std::move(memory);
      else if (name == "output_norm") output_norm_ = std::move(memory);
      else if (name == "output") output_ = std::move(memory);
      else if (name.starts_with("blk.")) {
        const size_t dot = name.find('.', 4);
        layer_weights& l = layers_.at(std::stoul(name.substr(4, dot - 4)));
        const std::string part = name.substr(dot + 1);
        if (part == "attn_norm") l.attn_norm = std::move(memory);
        else if (part == "attn_qkv") l.qkv = std::move(memory);
        else if (part == "attn_output") l.attn_output = std::move(memory);
        else if (part == "ffn_norm") l.ffn_norm = std::move(memory);
        else if (part == "ffn_gate_up") l.gate_up = std::move(memory);
        else if (part == "ffn_down") l.down = std::move(memory);
      }
    });
  }

  int32_t qkv_width() const { return config_.q_size() + 2 * config_.kv_size(); }

  void allocate_activations() {
    const size_t tokens = size_t(options_.max_step_tokens), sequences = size_t(options_.max_step_sequences);
    residual_ = device_memory(sizeof(bf16) * tokens * size_t(config_.hidden_size));
    normed_ = device_memory(residual_.bytes());
    proj_ = device_memory(residual_.bytes());
    qkv_ = device_memory(sizeof(bf16) * tokens * size_t(qkv_width()));
    q_compact_ = device_memory(sizeof(bf16) * tokens * size_t(config_.q_size()));
    attn_ = device_memory(sizeof(bf16) * tokens * size_t(config_.q_size()));
    gate_up_ = device_memory(sizeof(bf16) * tokens * 2 * size_t(config_.ffn_size));
    act_ = device_memory(sizeof(bf16) * tokens * size_t(config_.ffn_size));
    last_hidden_ = device_memory(sizeof(bf16) * sequences * size_t(config_.hidden_size));
    logits_ = device_memory(sizeof(float) * sequences * size_t(config_.vocab_size));
    decode_workspace_bytes_ = gpu::decode_attention_workspace_bytes(options_.max_step_sequences, config_.num_heads,
                                                                    config_.head_dim, config_.context_length);
    decode_workspace_ = device_memory(decode_workspace_bytes_);
    max_tiles_ = gpu::prefill_max_query_tiles(options_.max_step_tokens, options_.max_step_sequences, config_.num_heads,
                                              config_.num_kv_heads);
    max_blocks_per_sequence_ = (config_.context_length + options_.block_size - 1) / options_.block_size;
    samplers_.allocate(options_.max_step_sequences, config_.vocab_size);
    metadata_ = std::make_unique<metadata_layout>(options_.max_step_tokens, options_.max_step_sequences,
                                                  max_blocks_per_sequence_, max_tiles_, samplers_.staging_bytes());
    metadata_host_ = pinned_memory(metadata_->total);
    metadata_device_ = device_memory(metadata_->total);
  }

  size_t kv_bytes_per_block() const {
    return size_t(2) * size_t(config_.num_layers) * size_t(options_.block_size) * size_t(config_.kv_size()) * sizeof(bf16);
  }

  void allocate_kv_cache() {
    geometry_.block_size = options_.block_size;
    if (options_.num_blocks > 0) {
      geometry_.num_blocks = options_.num_blocks;
    } else {
      size_t free_bytes = 0, total_bytes = 0;
      INFLIGHT_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
      // Leave room for cuBLASLt's workspace and CUDA graphs (not allocated yet): 256 MiB.
      const size_t reserve = size_t(256) << 20;
      geometry_.num_blocks = gpu::kv_blocks_for_memory(total_bytes, free_bytes > reserve ? free_bytes - reserve : 0,
                                                       options_.gpu_memory_fraction, kv_bytes_per_block());
    }
    layer_cache_elements_ = int64_t(geometry_.num_blocks) * geometry_.block_size * config_.kv_size();
    const size_t bytes = sizeof(bf16) * size_t(layer_cache_elements_) * size_t(config_.num_layers);
    k_cache_ = device_memory(bytes);
    v_cache_ = device_memory(bytes);
  }

  bf16* layer_k(int32_t layer) const { return k_cache_.as<bf16>() + int64_t(layer) * layer_cache_elements_; }
  bf16* layer_v(int32_t layer) const { return v_cache_.as<bf16>() + int64_t(layer) * layer_cache_elements_; }

  template <class T>
  T* host_meta(size_t offset) const {
    return reinterpret_cast<T*>(metadata_host_.as<char>() + offset);
  }
  template <class T>
  T* device_meta(size_t offset) const {
    return reinterpret_cast<T*>(metadata_device_.as<char>() + offset);
  }

  // Copies the step's metadata into the pinned buffer, padded to `rows` sequences (and as many tokens) for
  // a graph replay, and uploads it.
  void stage_metadata(int32_t padded_sequences) {
    const step_layout& l = *layout_;
    const int32_t tokens = l.num_tokens(), sequences = l.num_sequences();
    const int32_t padded_tokens = padded_sequences > sequences ? tokens + (padded_sequences - sequences) : tokens;
    std::copy(l.token_ids().begin(), l.token_ids().end(), host_meta<int32_t>(metadata_->token_ids));
    std::copy(l.positions().begin(), l.positions().end(), host_meta<int32_t>(metadata_->positions));
    std::copy(l.slots().begin(), l.slots().end(), host_meta<int64_t>(metadata_->slots));
    std::copy(l.query_start_loc().begin(), l.query_start_loc().end(), host_meta<int32_t>(metadata_->query_start_loc));
    std::copy(l.seq_lens().begin(), l.seq_lens().end(), host_meta<int32_t>(metadata_->seq_lens));
    // step_layout's dense table has the same stride; only the columns up to the longest sequence's blocks
    // are copied (and uploaded): a long-context model's full rows are megabytes.
    const int32_t stride = max_blocks_per_sequence_;
    const int32_t used_blocks = std::max(1, (l.max_seq_len() + geometry_.block_size - 1) / geometry_.block_size);
    for (int32_t s = 0; s < sequences; ++s)
      std::copy_n(l.block_tables().data() + size_t(s) * size_t(stride), used_blocks,
                  host_meta<int32_t>(metadata_->block_tables) + size_t(s) * size_t(stride));
    std::copy(l.logits_tokens().begin(), l.logits_tokens().end(), host_meta<int32_t>(metadata_->logits_rows));
    // Padding rows of a graph bucket: token 0 at position 0 writes nothing (slot -1) and attends to
    // nothing (seq_len 0); its logits row reads token row 0 and its sampler row is unused.
    for (int32_t t = tokens; t < padded_tokens; ++t) {
      host_meta<int32_t>(metadata_->token_ids)[t] = 0;
      host_meta<int32_t>(metadata_->positions)[t] = 0;
      host_meta<int64_t>(metadata_->slots)[t] = -1;
    }
    for (int32_t s = sequences; s < padded_sequences; ++s) {
      host_meta<int32_t>(metadata_->query_start_loc)[s + 1] = s + 1;
      host_meta<int32_t>(metadata_->seq_lens)[s] = 0;
      host_meta<int32_t>(metadata_->logits_rows)[s] = 0;
    }
    // Padding rows' block tables: the null block (never read: their seq_len is 0).
    for (int32_t s = sequences; s < padded_sequences; ++s)
      std::fill_n(host_meta<int32_t>(metadata_->block_tables) + size_t(s) * size_t(stride), used_blocks, 0);
    if (!l.decode_only())
      gpu::build_prefill_tile_map(l.query_start_loc().data(), sequences, config_.num_heads, config_.num_kv_heads,
                                  host_meta<int32_t>(metadata_->tile_map), max_tiles_);
    upload_metadata(padded_tokens, padded_sequences, used_blocks, !l.decode_only());
  }

  // Copies the parts of the staged metadata this step uses, section by section (the buffers are sized for
  // the largest step, and the block tables for the model's whole context: uploading all of it would cost
  // megabytes per step). Addresses stay fixed, as CUDA graphs need.
  void upload_metadata(int32_t tokens, int32_t sequences, int32_t used_blocks, bool with_tile_map) {
    auto copy = [this](size_t offset, size_t bytes) {
      INFLIGHT_CUDA_CHECK(cudaMemcpyAsync(metadata_device_.as<char>() + offset, metadata_host_.as<char>() + offset, bytes,
                                          cudaMemcpyHostToDevice, stream_));
    };
    copy(metadata_->token_ids, sizeof(int32_t) * size_t(tokens));
    copy(metadata_->positions, sizeof(int32_t) * size_t(tokens));
    copy(metadata_->slots, sizeof(int64_t) * size_t(tokens));
    copy(metadata_->query_start_loc, sizeof(int32_t) * size_t(sequences + 1));
    copy(metadata_->seq_lens, sizeof(int32_t) * size_t(sequences));
    copy(metadata_->logits_rows, sizeof(int32_t) * size_t(sequences));
    copy(metadata_->sampling, sizeof(gpu::device_sampling_params) * size_t(sequences));
    if (with_tile_map) copy(metadata_->tile_map, sizeof(int32_t) * 2 * size_t(max_tiles_));
    // Each sequence's row of the block table, only as far as the longest sequence's blocks.
    const size_t pitch = sizeof(int32_t) * size_t(max_blocks_per_sequence_);
    INFLIGHT_CUDA_CHECK(cudaMemcpy2DAsync(metadata_device_.as<char>() + metadata_->block_tables, pitch,
                                          metadata_host_.as<char>() + metadata_->block_tables, pitch,
                                          sizeof(int32_t) * size_t(used_blocks), size_t(sequences),
                                          cudaMemcpyHostToDevice, stream_));
  }

  void gemm(const bf16* x, const device_memory& w, void* y, int64_t m, int64_t n, int64_t k,
            gpu::gemm_output output = gpu::gemm_output::bf16) {
    gemm_->run(x, w.as<bf16>(), y, output, m, n, k, /*accumulate=*/false, stream_);
  }

  // The whole forward pass (and sampling) for `tokens` token rows and `sequences` sequence rows, enqueued
  // on the stream; `decode` selects the decode attention kernel (one token per sequence).
  void enqueue_step(int32_t tokens, int32_t sequences, int32_t logits_rows, bool decode, bool sample) {
    context_bucket_ = context_bucket(layout_->max_seq_len());
    const int32_t hidden = config_.hidden_size, ffn = config_.ffn_size, q_size = config_.q_size(), width = qkv_width();
    const float eps = config_.rms_norm_eps, scale = 1.0f / std::sqrt(float(config_.head_dim));
    bf16* residual = residual_.as<bf16>();
    gpu::embed_tokens(device_meta<int32_t>(metadata_->token_ids), tokens, embedding_.as<bf16>(), config_.vocab_size,
                      hidden, residual, stream_);
    for (int32_t layer = 0; layer < config_.num_layers; ++layer) {
      const layer_weights& w = layers_[size_t(layer)];
      gpu::add_rms_norm(residual, layer == 0 ? nullptr : proj_.as<bf16>(), w.attn_norm.as<bf16>(), tokens, hidden, eps,
                        normed_.as<bf16>(), stream_);
      gemm(normed_.as<bf16>(), w.qkv, qkv_.as<bf16>(), tokens, width, hidden);
      gpu::rope_and_write_kv(qkv_.as<bf16>(), width, tokens, config_.num_heads, config_.num_kv_heads, config_.head_dim,
                             config_.rope_dims, device_meta<int32_t>(metadata_->positions), rope_inv_freq_.as<float>(),
                             device_meta<int64_t>(metadata_->slots), layer_k(layer), layer_v(layer),
                             int64_t(geometry_.num_blocks) * geometry_.block_size, stream_);
      if (decode) {
        gpu::decode_attention_args args;
        args.q = qkv_.as<bf16>();  // straight from the fused output: q is the first q_size of each row
        args.q_row_stride = width;
        args.k_cache = layer_k(layer);
        args.v_cache = layer_v(layer);
        args.block_tables = device_meta<int32_t>(metadata_->block_tables);
        args.block_table_stride = max_blocks_per_sequence_;
        args.seq_lens = device_meta<int32_t>(metadata_->seq_lens);
        args.num_seqs = sequences;
        args.max_context = context_bucket_;  // sizes the split grid; results do not depend on it
        args.num_q_heads = config_.num_heads;
        args.num_kv_heads = config_.num_kv_heads;
        args.head_dim = config_.head_dim;
        args.block_size = geometry_.block_size;
        args.scale = scale;
        args.workspace = decode_workspace_.as<void>();
        args.workspace_bytes = decode_workspace_bytes_;
        args.out = attn_.as<bf16>();
        gpu::decode_attention(args, stream_);
      } else {
        // The prefill kernel reads a compact q: copy it out of the fused rows (a strided 2-D copy).
        INFLIGHT_CUDA_CHECK(cudaMemcpy2DAsync(q_compact_.as<bf16>(), sizeof(bf16) * size_t(q_size), qkv_.as<bf16>(),
                                              sizeof(bf16) * size_t(width), sizeof(bf16) * size_t(q_size), size_t(tokens),
                                              cudaMemcpyDeviceToDevice, stream_));
        gpu::prefill_attention_params p;
        p.q = q_compact_.as<bf16>();
        p.key_cache = layer_k(layer);
        p.value_cache = layer_v(layer);
        p.out = attn_.as<bf16>();
        p.query_start_loc = device_meta<int32_t>(metadata_->query_start_loc);
        p.seq_lens = device_meta<int32_t>(metadata_->seq_lens);
        p.block_tables = device_meta<int32_t>(metadata_->block_tables);
        p.tile_map = device_meta<int32_t>(metadata_->tile_map);
        p.num_tokens = tokens;
        p.num_seqs = sequences;
        p.max_query_tiles = max_tiles_;
        p.num_q_heads = config_.num_heads;
        p.num_kv_heads = config_.num_kv_heads;
        p.head_dim = config_.head_dim;
        p.block_size = geometry_.block_size;
        p.block_table_stride = max_blocks_per_sequence_;
        p.scale = scale;
        gpu::prefill_attention(p, stream_);
      }
      gemm(attn_.as<bf16>(), w.attn_output, proj_.as<bf16>(), tokens, hidden, q_size);
      gpu::add_rms_norm(residual, proj_.as<bf16>(), w.ffn_norm.as<bf16>(), tokens, hidden, eps, normed_.as<bf16>(), stream_);
      gemm(normed_.as<bf16>(), w.gate_up, gate_up_.as<bf16>(), tokens, 2 * int64_t(ffn), hidden);
      gpu::silu_mul(gate_up_.as<bf16>(), tokens, ffn, act_.as<bf16>(), stream_);
      gemm(act_.as<bf16>(), w.down, proj_.as<bf16>(), tokens, hidden, ffn);
    }
    // The final norm only where logits are wanted: gather those rows of residual + proj first.
    gpu::add_rms_norm(residual, proj_.as<bf16>(), output_norm_.as<bf16>(), tokens, hidden, eps, normed_.as<bf16>(), stream_);
    if (logits_rows == 0) return;
    gpu::gather_rows(normed_.as<bf16>(), tokens, hidden, device_meta<int32_t>(metadata_->logits_rows), logits_rows,
                     last_hidden_.as<bf16>(), stream_);
    const device_memory& head = config_.tied_embeddings ? embedding_ : output_;
    gemm(last_hidden_.as<bf16>(), head, logits_.as<float>(), logits_rows, config_.vocab_size, hidden, gpu::gemm_output::fp32);
    if (sample)
      samplers_.enqueue(logits_.as<float>(), logits_rows, device_meta<char>(metadata_->sampling), stream_);
  }

  // The decode grid's context dimension: the step's longest sequence rounded up to a power of two (at
  // least one split), so a graph serves a range of lengths and short contexts do not launch the CTAs of
  // the model's whole context.
  int32_t context_bucket(int32_t max_seq_len) const {
    int32_t bucket = gpu::decode_split_tokens;
    while (bucket < max_seq_len && bucket < config_.context_length) bucket *= 2;
    return std::min(bucket, config_.context_length);
  }

  void run_step(bool sample) {
    try {
      run_step_unchecked(sample);
    } catch (...) {
      // Work already queued (the metadata upload, kernels) must finish before the next step rewrites the
      // pinned staging buffer; its result is of no use.
      cudaStreamSynchronize(stream_);
      cudaGetLastError();
      throw;
    }
  }

  void run_step_unchecked(bool sample) {
    const step_layout& l = *layout_;
    const bool decode = l.decode_only();
    // A decode step whose every sequence wants logits replays the graph of its (batch bucket, context
    // bucket), captured on first use; not when penalty lists are staged (their size changes from step to
    // step), and not for a shape whose capture failed before.
    if (options_.cuda_graphs && decode && l.num_logits() == l.num_sequences() && !(sample && samplers_.staged_penalties())) {
      const graph_key key{bucket_for(l.num_sequences()), context_bucket(l.max_seq_len()), sample};
      if (!failed_graphs_.contains(key)) {
        if (sample) samplers_.pad_rows(l.num_logits(), key.batch, metadata_host_.as<char>() + metadata_->sampling);
        stage_metadata(key.batch);
        if (const auto found = graphs_.find(key); found != graphs_.end()) {
          INFLIGHT_CUDA_CHECK(cudaGraphLaunch(found->second, stream_));
          return;
        }
        // First step of this shape: capture() runs it eagerly, then records it for the next ones.
        if (cudaGraphExec_t graph = capture(key)) graphs_.emplace(key, graph);
        else failed_graphs_.insert(key);  // eager from now on
        return;
      }
    }
    stage_metadata(l.num_sequences());
    enqueue_step(l.num_tokens(), l.num_sequences(), l.num_logits(), decode, sample);
    INFLIGHT_CUDA_CHECK_LAUNCH();
  }

  int32_t bucket_for(int32_t sequences) {
    if (buckets_.empty()) buckets_ = graph_buckets(options_.max_step_sequences);
    return *std::lower_bound(buckets_.begin(), buckets_.end(), sequences);
  }

  // Runs the (already staged) step eagerly once, so every kernel and cuBLASLt algorithm of the shape has run
  // before capture (first-use initialisation inside a capture fails), then captures the same step.
  // Returns null when capture fails; the eager run has done the step's work either way.
  cudaGraphExec_t capture(const graph_key& key) {
    const int32_t hidden = config_.hidden_size;
    gemm_->prepare(key.batch, qkv_width(), hidden, gpu::gemm_output::bf16, false);
    gemm_->prepare(key.batch, hidden, config_.q_size(), gpu::gemm_output::bf16, false);
    gemm_->prepare(key.batch, 2 * int64_t(config_.ffn_size), hidden, gpu::gemm_output::bf16, false);
    gemm_->prepare(key.batch, hidden, config_.ffn_size, gpu::gemm_output::bf16, false);
    gemm_->prepare(key.batch, config_.vocab_size, hidden, gpu::gemm_output::fp32, false);
    enqueue_step(key.batch, key.batch, key.batch, /*decode=*/true, key.sample);
    INFLIGHT_CUDA_CHECK_LAUNCH();
    INFLIGHT_CUDA_CHECK(cudaStreamSynchronize(stream_));
    // The graph must not change this step's state twice: the eager run above already wrote its K/V and
    // sampled. Capturing records the work without running it.
    cudaGraph_t graph = nullptr;
    if (cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal) != cudaSuccess) {
      cudaGetLastError();
      return nullptr;
    }
    bool recorded = true;
    try {
      enqueue_step(key.batch, key.batch, key.batch, /*decode=*/true, key.sample);
    } catch (const std::exception&) {
      recorded = false;
    }
    const cudaError_t ended = cudaStreamEndCapture(stream_, &graph);
    if (!recorded || ended != cudaSuccess || !graph) {
      if (graph) cudaGraphDestroy(graph);
      cudaGetLastError();
      return nullptr;
    }
    cudaGraphExec_t exec = nullptr;
    const cudaError_t instantiated = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    if (instantiated != cudaSuccess) {
      cudaGetLastError();
      return nullptr;
    }
    return exec;
  }

  model_config config_;
  cuda_backend_options options_;
  std::string description_;
  owned_stream stream_;
  std::unique_ptr<gpu::cublaslt_gemm> gemm_;
  size_t weight_bytes_ = 0;
  device_memory embedding_, output_norm_, output_, rope_inv_freq_;
  std::vector<layer_weights> layers_;
  device_memory residual_, normed_, proj_, qkv_, q_compact_, attn_, gate_up_, act_, last_hidden_, logits_;
  device_memory decode_workspace_;
  size_t decode_workspace_bytes_ = 0;
  int32_t max_tiles_ = 0, max_blocks_per_sequence_ = 0;
  std::unique_ptr<metadata_layout> metadata_;
  pinned_memory metadata_host_;
  device_memory metadata_device_;
  kv_cache_geometry geometry_;
  int64_t layer_cache_elements_ = 0;
  device_memory k_cache_, v_cache_;
  std::unique_ptr<step_layout> layout_;
  gpu::device_samplers samplers_;
  std::vector<int32_t> buckets_;
  int32_t context_bucket_ = 0;  // of the step being enqueued
  std::map<graph_key, cudaGraphExec_t> graphs_;
  std::set<graph_key> failed_graphs_;
};

}  // namespace

bool cuda_backend_available(std::string* reason) {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess || count == 0) {
    if (reason) *reason = status != cudaSuccess ? cudaGetErrorString(status) : "no CUDA device";
    return false;
  }
  return true;
}

std::unique_ptr<backend> make_cuda_backend(std::shared_ptr<const gguf::gguf_file> file, const cuda_backend_options& options) {
  std::string reason;
  if (!cuda_backend_available(&reason)) throw std::runtime_error("no usable CUDA device: " + reason);
  const model_config config = model_config::from_gguf(*file);
  std::vector<float> freq_factors;
  if (const gguf::tensor_info* factors = file->find_tensor("rope_freqs.weight")) {
    freq_factors.resize(factors->num_elements);
    dequantize_row(factors->type, factors->data, freq_factors.data(), int64_t(freq_factors.size()));
  }
  return std::make_unique<cuda_backend>(
      config, [&](const gpu::bf16_tensor_visitor& visit) { gpu::for_each_bf16_weight(*file, config, visit); },
      std::move(freq_factors), options, file->path());
}

std::unique_ptr<backend> make_dummy_cuda_backend(const std::string& hf_config_path, uint64_t seed,
                                                 const cuda_backend_options& options) {
  std::string reason;
  if (!cuda_backend_available(&reason)) throw std::runtime_error("no usable CUDA device: " + reason);
  const model_config config = gpu::model_config_from_hf_json(hf_config_path);
  return std::make_unique<cuda_backend>(
      config, [&](const gpu::bf16_tensor_visitor& visit) { gpu::for_each_dummy_weight(config, seed, visit); },
      std::vector<float>{}, options, "dummy weights, shape of " + hf_config_path);
}

}  // namespace inflight
