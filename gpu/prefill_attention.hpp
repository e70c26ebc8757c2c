// Paged prefill attention over a ragged batch, attending only from the paged KV cache.
//
// The step's new K/V are already in the cache (RoPE + cache write run first), so one kernel covers fresh
// prefill, chunked prefill (a chunk continuing a sequence whose earlier tokens are cached), prefix-cache hits
// (cached blocks shared by several sequences) and single-token decode rows.
//
// Causal mask, bottom-right aligned: query row i (0-based) of a sequence with q_len = qsl[s+1] - qsl[s] new
// tokens and kv_len = seq_lens[s] sees keys 0 .. kv_len - q_len + i.
//
// Work split. A CTA owns one "query tile": up to R = 64 / G consecutive query rows of ONE sequence, for the
// G = num_q_heads / num_kv_heads query heads that share one KV head; its 64 query slots are ordered
// slot = row * G + head_in_group. Each K/V byte streamed through shared memory therefore serves all G heads
// (decode rows and short chunks use G of 64 slots instead of 1, and read the KV once per KV head, not G times).
// Grid: (max_query_tiles, num_kv_heads); tiles past the real count exit at once (graph capture safe).
//
// The tile map ("tile -> sequence" table), int32 [2 * max_query_tiles], filled on the HOST by
// build_prefill_tile_map() and uploaded by the caller each step:
//   tile_map[2*i]     = sequence index s, or -1 for an unused entry (the CTA exits)
//   tile_map[2*i + 1] = first query row of the tile, relative to the sequence (a multiple of R)
// The map depends on R, so it must be built with the same num_q_heads / num_kv_heads as the launch.
// Tiles are aligned to each sequence's first row and the KV loop always starts at key 0 in fixed steps, so a
// row's result does not depend on the rest of the batch (batch invariant, bit for bit).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace inflight::gpu {

// Query slots per CTA (rows x heads of one KV group).
inline constexpr int prefill_tile_slots = 64;
// The largest GQA group (num_q_heads / num_kv_heads) accepted.
inline constexpr int prefill_max_gqa_group = 16;

enum class prefill_attention_impl {
  tensor_core,  // FlashAttention-2 style: mma.sync m16n8k16 bf16 (inline PTX), fp32 online softmax
  reference,    // plain fp32 on CUDA cores, one CTA per (query token, KV head); slow, for tests and debugging
};

struct prefill_attention_params {
  const __nv_bfloat16* q = nullptr;            // [num_tokens][num_q_heads][head_dim], rotated
  const __nv_bfloat16* key_cache = nullptr;    // [num_blocks][block_size][num_kv_heads][head_dim]
  const __nv_bfloat16* value_cache = nullptr;  // same layout as key_cache
  __nv_bfloat16* out = nullptr;                // [num_tokens][num_q_heads][head_dim]; rows outside
                                               // [qsl[0], qsl[num_seqs]) are not written
  const int32_t* query_start_loc = nullptr;    // [num_seqs + 1], non-decreasing
  const int32_t* seq_lens = nullptr;           // [num_seqs], KV length including this step's tokens
  const int32_t* block_tables = nullptr;       // [num_seqs][block_table_stride]
  const int32_t* tile_map = nullptr;           // [2 * max_query_tiles] (tensor_core only; see above)
  int num_tokens = 0;                          // rows of q/out (host maximum; sizes the reference path's
                                               // grid: num_tokens x num_kv_heads CTAs)
  int num_seqs = 0;
  int max_query_tiles = 0;                     // entries of tile_map (host maximum; sizes the tensor_core
                                               // grid: max_query_tiles x num_kv_heads CTAs)
  int num_q_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;                            // 64 or 128
  int block_size = 0;                          // tokens per cache block (16 or 32 in practice; any > 0)
  int block_table_stride = 0;                  // elements between rows of block_tables
  float scale = 0.0f;                          // softmax scale, normally 1/sqrt(head_dim)
};

// Query rows per tile: prefill_tile_slots / (num_q_heads / num_kv_heads). Throws std::invalid_argument for
// a head configuration the kernels reject.
int prefill_query_rows_per_tile(int num_q_heads, int num_kv_heads);

// Upper bound on the number of query tiles of any step with at most max_num_tokens query rows in at most
// max_num_seqs sequences: sum_s ceil(q_len_s / R) <= (T + S * (R - 1)) / R, and never more than T.
int prefill_max_query_tiles(int max_num_tokens, int max_num_seqs, int num_q_heads, int num_kv_heads);

// Host helper: fills tile_map[0 .. 2 * max_query_tiles) from a HOST copy of query_start_loc[num_seqs + 1]
// (format above; within a sequence the last tile, the one with the most keys, comes first) and marks the
// remaining entries unused. Returns the number of tiles. Throws std::invalid_argument when query_start_loc
// decreases or the tiles do not fit in max_query_tiles.
int build_prefill_tile_map(const int32_t* query_start_loc, int num_seqs, int num_q_heads, int num_kv_heads,
                           int32_t* tile_map, int max_query_tiles);

// out = softmax(scale * q K^T, causal bottom-right) V for every query row of the batch, reading K/V from the
// paged cache through the block tables. No workspace. Validates the arguments on the host (std::invalid_argument
// naming the bad one), launches on `stream`, never allocates or synchronises.
void prefill_attention(const prefill_attention_params& params, cudaStream_t stream,
                       prefill_attention_impl impl = prefill_attention_impl::tensor_core);

}  // namespace inflight::gpu
