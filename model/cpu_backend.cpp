#include "inflight/cpu_backend.hpp"
#include "inflight/step_layout.hpp"

#include <algorithm>
#include <cmath>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu_attention.hpp"
#include "cpu_weights.hpp"
#include "inflight/gguf.hpp"
#include "inflight/quant.hpp"
#include "quant_dot.hpp"
#include "thread_pool.hpp"

namespace inflight {

namespace {

// RMSNorm as ggml computes it: squares summed in double, then (x * scale) * weight.
void rms_norm(const float* x, const float* weight, float* out, int32_t n, float eps) {
  double sum = 0.0;
  for (int32_t i = 0; i < n; ++i) sum += double(x[i] * x[i]);
  const float scale = 1.0f / std::sqrt(float(sum / n) + eps);
  for (int32_t i = 0; i < n; ++i) out[i] = (x[i] * scale) * weight[i];
}

// One output buffer of a fused matmul: several matrices that read the same activations share one pass
// over the threads (Q/K/V, gate/up), so no thread idles while another finishes a small matrix.
struct matmul_target {
  const kernels::weight_matrix* weights;
  float* out;
};

constexpr int64_t rows_per_unit = 16;  // split granularity: matches the kernel's L1 row chunk

void fused_matmul(std::initializer_list<matmul_target> targets, const kernels::act_block* act, int64_t num_tokens,
                  const thread_pool& pool, int thread) {
  int64_t total_units = 0;
  for (const auto& target : targets) total_units += (target.weights->rows + rows_per_unit - 1) / rows_per_unit;
  const auto mine = pool.split(total_units, thread);
  int64_t unit_base = 0;
  for (const auto& target : targets) {
    const int64_t units = (target.weights->rows + rows_per_unit - 1) / rows_per_unit;
    const int64_t begin = std::max(mine.begin, unit_base) - unit_base;
    const int64_t end = std::min(mine.end, unit_base + units) - unit_base;
    if (begin < end) {
      kernels::matmul(*target.weights, act, num_tokens, target.out, target.weights->rows, begin * rows_per_unit,
                      std::min(end * rows_per_unit, target.weights->rows));
    }
    unit_base += units;
  }
}

std::string kernel_isa() {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
  return "AVX2+AVX512-VNNI";
#elif defined(__AVXVNNI__)
  return "AVX2+AVX-VNNI";
#elif defined(__AVX2__)
  return "AVX2";
#else
  return "scalar";
#endif
}

}  // namespace

struct cpu_backend::impl {
  std::shared_ptr<const gguf::gguf_file> file;
  model_config config;
  std::unique_ptr<cpu_weights> weights;
  thread_pool pool;
  int32_t max_tokens, max_sequences;
  kv_cache_geometry geometry;
  kernels::attention_shape shape;

  // KV cache, per layer: [num_blocks * block_size slots][num_kv_heads * head_dim] fp16 (backend.hpp).
  int64_t layer_cache_values = 0;
  std::unique_ptr<uint16_t[]> k_cache, v_cache;

  // Step scratch, sized once.
  std::vector<float> hidden, normed, projected, q, k, v, attn_out, gate, up, final_hidden;
  std::vector<kernels::act_block> act_hidden, act_attn, act_ffn, act_final;
  std::vector<float> rope_cos, rope_sin, attention_scratch;
  std::unique_ptr<step_layout> layout;  // the step's per-token metadata

  // The step being run.
  std::span<const sequence_chunk> chunks;
  float* logits = nullptr;
  int64_t num_tokens = 0, num_logits = 0;

  impl(std::shared_ptr<const gguf::gguf_file> f, const cpu_backend_options& options)
      : file(std::move(f)), config(model_config::from_gguf(*file)), pool(options.num_threads) {
    if (options.max_step_tokens <= 0 || options.max_step_sequences <= 0 || options.block_size <= 0) {
      throw std::invalid_argument("cpu_backend: max_step_tokens, max_step_sequences and block_size must be > 0");
    }
    if (config.queries_per_kv() > 16 || config.head_dim > 256 || config.head_dim % 8 != 0) {
      throw gguf::gguf_error(file->path() + ": head shape not supported by the CPU attention kernel");
    }
    if (config.hidden_size % 32 != 0 || config.ffn_size % 32 != 0 || config.q_size() % 32 != 0) {
      throw gguf::gguf_error(file->path() + ": hidden, feed-forward and query sizes must be multiples of 32");
    }
    weights = cpu_weights::load(*file, config, options.on_load_progress, options.load_progress_context);
    max_tokens = options.max_step_tokens;
    max_sequences = options.max_step_sequences;
    shape = {config.num_heads, config.num_kv_heads, config.head_dim, options.block_size};

    geometry.block_size = options.block_size;
    const size_t block_bytes = bytes_per_block();
    const size_t budget_blocks = options.num_blocks > 0 ? size_t(options.num_blocks) : options.kv_cache_bytes / block_bytes;
    if (budget_blocks == 0) throw std::invalid_argument("cpu_backend: KV cache budget is smaller than one block");
    if (budget_blocks > size_t(1) << 30) throw std::invalid_argument("cpu_backend: KV cache budget is implausibly large");
    geometry.num_blocks = int32_t(budget_blocks);
    layer_cache_values = int64_t(geometry.num_blocks) * geometry.block_size * config.kv_size();
    // Not zero-filled: attention reads only positions a sequence has written, and untouched pages of a
    // large cache then cost nothing until used.
    const size_t cache_values = size_t(layer_cache_values) * size_t(config.num_layers);
    try {
      k_cache = std::make_unique_for_overwrite<uint16_t[]>(cache_values);
      v_cache = std::make_unique_for_overwrite<uint16_t[]>(cache_values);
    } catch (const std::bad_alloc&) {
      throw std::invalid_argument("cannot allocate a KV cache of " +
                                  std::to_string((2 * cache_values * sizeof(uint16_t)) >> 20) + " MiB");
    }

    const size_t tokens = size_t(max_tokens);
    hidden.resize(tokens * size_t(config.hidden_size));
    normed.resize(hidden.size());
    projected.resize(hidden.size());
    q.resize(tokens * size_t(config.q_size()));
    attn_out.resize(q.size());
    k.resize(tokens * size_t(config.kv_size()));
    v.resize(k.size());
    gate.resize(tokens * size_t(config.ffn_size));
    up.resize(gate.size());
    act_hidden.resize(tokens * size_t(config.hidden_size / 32));
    act_attn.resize(tokens * size_t(config.q_size() / 32));
    act_ffn.resize(tokens * size_t(config.ffn_size / 32));
    final_hidden.resize(size_t(max_sequences) * size_t(config.hidden_size));
    act_final.resize(size_t(max_sequences) * size_t(config.hidden_size / 32));
    rope_cos.resize(tokens * size_t(config.rope_dims / 2));
    rope_sin.resize(rope_cos.size());
    attention_scratch.resize(size_t(pool.size()) * size_t(config.queries_per_kv()) * size_t(config.context_length));
    layout = std::make_unique<step_layout>(
        step_limits{max_tokens, max_sequences, config.context_length, config.vocab_size, geometry, 0});

    // Size every thread's matmul scratch now, so that a step never allocates (and so never throws).
    const int64_t widest = std::max({config.hidden_size, config.ffn_size, config.q_size()});
    auto reserve = [&](int) { kernels::reserve_thread_scratch(max_tokens, widest); };
    pool.run(reserve);
  }

  size_t bytes_per_block() const {
    return size_t(2) * size_t(config.num_layers) * size_t(geometry.block_size) * size_t(config.kv_size()) *
           sizeof(uint16_t);
  }

  // Checks the step and lays out per-token metadata (step_layout). Runs on the calling thread before the
  // parallel part.
  void prepare(std::span<const sequence_chunk> step, std::span<float> logits_out) {
    layout->prepare(step, int64_t(logits_out.size()));
    chunks = step;
    logits = logits_out.data();
    num_tokens = layout->num_tokens();
    num_logits = layout->num_logits();
  }

  // Token t: hidden += projected (the last sublayer's output) when `add_residual`, then the RMS norm
  // with `norm_weights`, quantized into act_hidden for the next matmul.
  void add_residual_norm_quantize(int64_t t, bool add_residual, const float* norm_weights) {
    const int32_t hidden_size = config.hidden_size;
    float* x = hidden.data() + t * hidden_size;
    if (add_residual) {
      const float* delta = projected.data() + t * hidden_size;
      for (int32_t i = 0; i < hidden_size; ++i) x[i] += delta[i];
    }
    rms_norm(x, norm_weights, normed.data() + t * hidden_size, hidden_size, config.rms_norm_eps);
    kernels::quantize_activations(normed.data() + t * hidden_size, act_hidden.data() + t * (hidden_size / 32),
                                  hidden_size);
  }

  // The whole step, run by every thread of the pool; `barrier()` separates ops that depend on each other.
  void run_step(int thread) {
    const int32_t hidden_size = config.hidden_size, q_size = config.q_size(), kv_size = config.kv_size();
    const int32_t ffn_size = config.ffn_size, half_rope = config.rope_dims / 2;
    const int32_t hidden_blocks = hidden_size / 32;
    const auto my_tokens = pool.split(num_tokens, thread);
    const float* freq_factors = weights->rope_freq_factors.empty() ? nullptr : weights->rope_freq_factors.data();

    // Embeddings and per-token rotary angles.
    for (int64_t t = my_tokens.begin; t < my_tokens.end; ++t) {
      const auto& embedding = weights->token_embedding;
      dequantize_row(embedding.type, embedding.data + size_t(layout->token_ids()[size_t(t)]) * embedding.row_bytes,
                     hidden.data() + t * hidden_size, hidden_size);
      kernels::rope_angles(layout->positions()[size_t(t)], config.rope_dims, config.rope_freq_base, config.rope_freq_scale,
                           freq_factors, rope_cos.data() + t * half_rope, rope_sin.data() + t * half_rope);
    }

    for (int32_t layer = 0; layer < config.num_layers; ++layer) {
      const cpu_layer_weights& w = weights->layers[size_t(layer)];
      uint16_t* layer_k = k_cache.get() + layer * layer_cache_values;
      uint16_t* layer_v = v_cache.get() + layer * layer_cache_values;

      // Residual from the previous layer's FFN, then attention norm, quantized for the Q/K/V products.
      for (int64_t t = my_tokens.begin; t < my_tokens.end; ++t) {
        add_residual_norm_quantize(t, layer > 0, w.attn_norm.data());
      }
      pool.barrier();
      fused_matmul({{&w.attn_q, q.data()}, {&w.attn_k, k.data()}, {&w.attn_v, v.data()}}, act_hidden.data(),
                   num_tokens, pool, thread);
      pool.barrier();

      // Rotary embeddings, then K/V into the paged cache.
      for (int64_t t = my_tokens.begin; t < my_tokens.end; ++t) {
        const float* cos_values = rope_cos.data() + t * half_rope;
        const float* sin_values = rope_sin.data() + t * half_rope;
        kernels::apply_rope(q.data() + t * q_size, config.num_heads, config.head_dim, config.rope_dims, cos_values,
                            sin_values);
        kernels::apply_rope(k.data() + t * kv_size, config.num_kv_heads, config.head_dim, config.rope_dims,
                            cos_values, sin_values);
        kernels::store_kv(k.data() + t * kv_size, v.data() + t * kv_size, layer_k, layer_v, layout->slots()[size_t(t)],
                          kv_size);
      }
      pool.barrier();

      // Attention: one item per (token, kv head), dealt round-robin so that the long tail of a prefill
      // chunk (later tokens see more positions) is shared evenly.
      float* scratch = attention_scratch.data() +
                       size_t(thread) * size_t(config.queries_per_kv()) * size_t(config.context_length);
      for (int64_t item = thread; item < num_tokens * config.num_kv_heads; item += pool.size()) {
        const int64_t t = item / config.num_kv_heads;
        const int32_t kv_head = int32_t(item % config.num_kv_heads);
        const sequence_chunk& chunk = chunks[size_t(layout->token_chunk()[size_t(t)])];
        kernels::attend(q.data() + t * q_size, layer_k, layer_v, chunk.block_table, layout->positions()[size_t(t)] + 1, kv_head,
                        shape, attn_out.data() + t * q_size, scratch);
      }
      pool.barrier();
      for (int64_t t = my_tokens.begin; t < my_tokens.end; ++t) {
        kernels::quantize_activations(attn_out.data() + t * q_size, act_attn.data() + t * (q_size / 32), q_size);
      }
      pool.barrier();
      fused_matmul({{&w.attn_output, projected.data()}}, act_attn.data(), num_tokens, pool, thread);
      pool.barrier();

      // Residual, FFN norm, SwiGLU.
      for (int64_t t = my_tokens.begin; t < my_tokens.end; ++t) add_residual_norm_quantize(t, true, w.ffn_norm.data());
      pool.barrier();
      fused_matmul({{&w.ffn_gate, gate.data()}, {&w.ffn_up, up.data()}}, act_hidden.data(), num_tokens, pool, thread);
      pool.barrier();
      for (int64_t t = my_tokens.begin; t < my_tokens.end; ++t) {
        float* g = gate.data() + t * ffn_size;
        const float* u = up.data() + t * ffn_size;
        for (int32_t i = 0; i < ffn_size; ++i) g[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
        kernels::quantize_activations(g, act_ffn.data() + t * (ffn_size / 32), ffn_size);
      }
      pool.barrier();
      fused_matmul({{&w.ffn_down, projected.data()}}, act_ffn.data(), num_tokens, pool, thread);
      pool.barrier();
    }

    // Final residual and norm for the tokens that need logits, then the LM head over all of them at once.
    const auto my_outputs = pool.split(num_logits, thread);
    for (int64_t o = my_outputs.begin; o < my_outputs.end; ++o) {
      const int64_t t = layout->logits_tokens()[size_t(o)];
      float* x = hidden.data() + t * hidden_size;
      const float* delta = projected.data() + t * hidden_size;
      for (int32_t i = 0; i < hidden_size; ++i) x[i] += delta[i];
      rms_norm(x, weights->output_norm.data(), final_hidden.data() + o * hidden_size, hidden_size,
               config.rms_norm_eps);
      kernels::quantize_activations(final_hidden.data() + o * hidden_size, act_final.data() + o * hidden_blocks,
                                    hidden_size);
    }
    pool.barrier();
    if (num_logits > 0) fused_matmul({{&weights->output, logits}}, act_final.data(), num_logits, pool, thread);
  }
};

cpu_backend::cpu_backend(std::shared_ptr<const gguf::gguf_file> file, const cpu_backend_options& options)
    : impl_(std::make_unique<impl>(std::move(file), options)) {}

cpu_backend::~cpu_backend() = default;

const model_config& cpu_backend::config() const { return impl_->config; }
kv_cache_geometry cpu_backend::kv_geometry() const { return impl_->geometry; }
int32_t cpu_backend::max_step_tokens() const { return impl_->max_tokens; }
int32_t cpu_backend::max_step_sequences() const { return impl_->max_sequences; }
int cpu_backend::num_threads() const { return impl_->pool.size(); }
size_t cpu_backend::kv_bytes_per_block() const { return impl_->bytes_per_block(); }

void cpu_backend::forward(std::span<const sequence_chunk> chunks, std::span<float> logits) {
  impl_->prepare(chunks, logits);
  if (impl_->num_tokens == 0) return;
  auto step = [this](int thread) { impl_->run_step(thread); };
  impl_->pool.run(step);
}

std::string cpu_backend::describe() const {
  const auto& i = *impl_;
  return "cpu backend: " + std::to_string(i.pool.size()) + " threads, kernels " + kernel_isa() + ", KV cache " +
         std::to_string(i.geometry.num_blocks) + " blocks x " + std::to_string(i.geometry.block_size) + " tokens (" +
         std::to_string((i.bytes_per_block() * size_t(i.geometry.num_blocks)) >> 20) + " MiB)" +
         (i.weights->converted_bytes ? ", " + std::to_string(i.weights->converted_bytes >> 20) +
                                           " MiB of weights converted to Q8_0"
                                     : std::string());
}

}  // namespace inflight
