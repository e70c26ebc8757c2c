// Paged decode attention: one new query token per sequence against that sequence's whole KV history in
// the paged cache. Host-callable launcher; the kernels live in decode_attention.cu.
//
// Layouts (shared with the other gpu/ kernels and the CPU backend):
//   K and V cache, per layer: [num_blocks][block_size][num_kv_heads][head_dim] bf16 (NHD). Position p of
//   sequence s is at block block_tables[s * block_table_stride + p / block_size], offset p % block_size.
//   q: row s (s < num_seqs) is sequence s's query, q_row_stride elements apart (head_dim * num_q_heads for
//   a compact q; (num_q_heads + 2 * num_kv_heads) * head_dim to read straight from the fused QKV output),
//   heads contiguous inside the row: q[s * q_row_stride + head * head_dim + d].
//   out: [num_seqs][num_q_heads][head_dim] bf16, compact.
//   seq_lens[s]: KV length including this step's token (already written to the cache by rope_and_write_kv).
// Query head h reads KV head h / (num_q_heads / num_kv_heads) (GQA); out = softmax(q·Kᵀ · scale) · V over
// positions 0 .. seq_lens[s] - 1, softmax in fp32.
//
// Work split (fixed, so results are batch-invariant: a sequence's output depends only on its own q, cache
// and length, bit for bit, whatever else is in the batch or how large max_context is):
//   the KV range is cut into splits of decode_split_tokens positions; one CTA per (split, KV head, sequence)
//   handles all query heads of that KV head, so each K/V byte is read once. A sequence with one split writes
//   `out` directly; longer ones write per-split partials (max, sum, unnormalised output, fp32) to the
//   workspace and a second kernel combines them with log-sum-exp weights.
// Grids are sized from num_seqs and max_context (host values) and CTAs past a sequence's length exit at
// once, so a launch can be captured into a CUDA graph and replayed with other lengths. Padding sequences
// (seq_lens[s] == 0) get an all-zero output row. seq_lens[s] must be <= max_context: longer ones are
// clamped to max_context (so nothing is read out of bounds; the host validates lengths).
// Unwritten cache slots may hold anything (NaN included): positions >= seq_lens[s] are never read.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace inflight::gpu {

// KV positions per split (a constant of the algorithm, not a tuning knob: changing it changes results).
inline constexpr int32_t decode_split_tokens = 512;

// Splits the grid is sized for: ceil(max_context / decode_split_tokens).
inline int32_t decode_attention_max_splits(int32_t max_context) {
  return max_context <= 0 ? 0 : (max_context + decode_split_tokens - 1) / decode_split_tokens;
}

// Workspace bytes decode_attention needs for these maxima (0 when max_context fits in one split: the
// workspace is then unused and may be null).
size_t decode_attention_workspace_bytes(int32_t max_num_seqs, int32_t num_q_heads, int32_t head_dim,
                                        int32_t max_context);

struct decode_attention_args {
  const __nv_bfloat16* q = nullptr;  // see the layout above
  int64_t q_row_stride = 0;          // elements, a multiple of 8
  const __nv_bfloat16* k_cache = nullptr;
  const __nv_bfloat16* v_cache = nullptr;
  const int32_t* block_tables = nullptr;  // [num_seqs][block_table_stride]
  int32_t block_table_stride = 0;
  const int32_t* seq_lens = nullptr;  // [num_seqs]
  int32_t num_seqs = 0;               // rows of q/out; the grid's sequence dimension (pad to a bucket)
  int32_t max_context = 0;            // >= every seq_lens[s]; sizes the grid's split dimension
  int32_t num_q_heads = 0;
  int32_t num_kv_heads = 0;  // num_q_heads / num_kv_heads in [1, 8]
  int32_t head_dim = 0;      // 64 or 128
  int32_t block_size = 0;
  float scale = 0.0f;  // softmax scale, normally 1 / sqrt(head_dim)
  // decode_attention_workspace_bytes(num_seqs, num_q_heads, head_dim, max_context) bytes or more, 16-byte
  // aligned (unused and may be null when max_context <= decode_split_tokens).
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  __nv_bfloat16* out = nullptr;  // [num_seqs][num_q_heads][head_dim]
};

// Launches the split kernel and, when max_context needs more than one split, the combine kernel.
// Throws std::invalid_argument on a bad argument (head_dim other than 64/128, a GQA ratio outside [1, 8],
// a workspace too small, misaligned pointers, ...), std::runtime_error when the launch fails.
void decode_attention(const decode_attention_args& args, cudaStream_t stream);

}  // namespace inflight::gpu
