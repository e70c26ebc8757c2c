// Paged decode attention (see decode_attention.hpp for the contract).
//
// Split kernel, one CTA of 128 threads per (split, KV head, sequence):
//
//   a "subgroup" of head_dim / 8 lanes (8 for d=64, 16 for d=128) owns one KV position at a time; each lane
//   holds 8 dimensions (one 16-byte load of K and one of V) and those 8 dimensions of all G query heads
//   (q fragment, fp32 registers). 128 threads = 16 subgroups (d=64) or 8 (d=128).
//
//       split of 512 positions, round r, subgroup s, tile slot j  ->  position
//           start + r * (subgroups * tile) + j * subgroups + s
//
//   Per round each subgroup issues `tile` K and V loads at once (memory-level parallelism), computes
//   q·k for the G heads (8-term partial dot per lane, butterfly sum over the subgroup: every lane ends with
//   the same bits), then an online-softmax update in registers: one rescale per round, not per position.
//   Positions >= the sequence length are never loaded (zeros stand in, with probability exactly 0), so
//   garbage in unwritten cache slots cannot reach the sums. Scores are kept in base 2 (scale * log2 e
//   folded in, exp2f), which is also the unit of the per-split maxima in the workspace.
//
//   At the end the subgroups' states (max, sum, 8-dim accumulators) meet in shared memory and are merged
//   in a fixed order: a one-split sequence writes out = acc / sum directly; otherwise the split writes its
//   (max, sum) and unnormalised output to the workspace.
//
// Combine kernel, one CTA of head_dim threads per (query head, sequence) with more than one split:
//   out = sum_i 2^(m_i - M) acc_i / sum_i 2^(m_i - M) l_i, M = max_i m_i, in split order.
//
// Everything about a sequence's arithmetic (split boundaries, position-to-lane map, merge order) depends
// on its length alone, so outputs are bit-identical whatever the batch around it.
#include "decode_attention.hpp"

#include <cmath>
#include <stdexcept>

#include "cuda_check.hpp"
#include "kernel_helpers.cuh"

namespace inflight::gpu {
namespace {

using bf16 = __nv_bfloat16;

constexpr int split_threads = 128;
constexpr int max_group = 8;  // query heads per KV head the kernels are instantiated for
constexpr size_t max_combine_shared_bytes = 48 * 1024;

// Workspace layout (max_splits > 1 only), fp32:
//   partial_out   [num_seqs][num_q_heads][max_splits][head_dim]   unnormalised sum_p 2^(s_p - m) v_p
//   partial_stats [num_seqs][num_q_heads][max_splits]  float2    (m = max score in base 2, l = sum 2^(s_p - m))
struct workspace_view {
  float* partial_out;
  float2* partial_stats;
};

inline size_t partial_count(int32_t num_seqs, int32_t num_q_heads, int32_t max_splits) {
  return size_t(num_seqs) * size_t(num_q_heads) * size_t(max_splits);
}

workspace_view carve_workspace(void* workspace, int32_t num_seqs, int32_t num_q_heads, int32_t head_dim,
                               int32_t max_splits) {
  float* base = static_cast<float*>(workspace);
  const size_t out_floats = partial_count(num_seqs, num_q_heads, max_splits) * size_t(head_dim);
  // head_dim is a multiple of 64, so the stats start 16-byte aligned when the workspace does.
  return {base, reinterpret_cast<float2*>(base + out_floats)};
}

template <int head_dim, int group>
struct split_config {
  static constexpr int lanes_per_token = head_dim / 8;              // one 16-byte vector per lane
  static constexpr int subgroups = split_threads / lanes_per_token;  // positions in flight per pass
  static constexpr int tile = group <= 4 ? 8 : 4;                    // positions per subgroup per round
  static constexpr int positions_per_round = subgroups * tile;
  static_assert(head_dim % 8 == 0 && lanes_per_token <= 32 && 32 % lanes_per_token == 0);
};

template <int head_dim, int group>
__global__ void __launch_bounds__(split_threads)
    decode_split_kernel(const bf16* __restrict__ q, int64_t q_row_stride, const bf16* __restrict__ k_cache,
                        const bf16* __restrict__ v_cache, const int32_t* __restrict__ block_tables,
                        int32_t block_table_stride, const int32_t* __restrict__ seq_lens, int32_t num_kv_heads,
                        int32_t block_size, int32_t max_context, int32_t max_splits, float scale_log2,
                        workspace_view workspace, bf16* __restrict__ out) {
  using config = split_config<head_dim, group>;
  constexpr int lanes_per_token = config::lanes_per_token;
  constexpr int subgroups = config::subgroups;
  constexpr int tile = config::tile;

  const int32_t split = blockIdx.x;
  const int32_t kv_head = blockIdx.y;
  const int32_t seq = blockIdx.z;
  const int32_t num_q_heads = num_kv_heads * group;
  const int32_t first_q_head = kv_head * group;

  // Length, clamped to what the grid and the block table cover (the host guarantees seq_lens <= max_context).
  int32_t length = seq_lens[seq];
  length = length < 0 ? 0 : (length > max_context ? max_context : length);
  bf16* out_heads = out + (int64_t(seq) * num_q_heads + first_q_head) * head_dim;
  if (length == 0) {  // padding sequence: a defined (zero) output row, written once
    if (split == 0) {
      for (int i = threadIdx.x; i < group * head_dim; i += split_threads) out_heads[i] = __float2bfloat16(0.0f);
    }
    return;
  }
  const int32_t start = split * decode_split_tokens;
  if (start >= length) return;  // the whole CTA leaves before any barrier
  const int32_t end = min(start + decode_split_tokens, length);
  const int32_t num_splits = (length + decode_split_tokens - 1) / decode_split_tokens;

  const int subgroup = threadIdx.x / lanes_per_token;
  const int dim0 = (threadIdx.x % lanes_per_token) * 8;

  float q_frag[group][8];
  const bf16* q_row = q + int64_t(seq) * q_row_stride + int64_t(first_q_head) * head_dim + dim0;
#pragma unroll
  for (int g = 0; g < group; ++g) unpack8(*reinterpret_cast<const uint4*>(q_row + g * head_dim), q_frag[g]);

  float running_max[group], running_sum[group], acc[group][8];
#pragma unroll
  for (int g = 0; g < group; ++g) {
    running_max[g] = -INFINITY;
    running_sum[g] = 0.0f;
#pragma unroll
    for (int i = 0; i < 8; ++i) acc[g][i] = 0.0f;
  }

  const int32_t* table = block_tables + int64_t(seq) * block_table_stride;
  const int64_t token_stride = int64_t(num_kv_heads) * head_dim;  // elements between slots
  const int64_t head_offset = int64_t(kv_head) * head_dim + dim0;
  // Rounds are uniform over the CTA, so every lane reaches every shuffle (full masks are valid).
  const int32_t rounds = (end - start + config::positions_per_round - 1) / config::positions_per_round;
  for (int32_t round = 0; round < rounds; ++round) {
    const int32_t first_position = start + round * config::positions_per_round + subgroup;
    uint4 k_raw[tile], v_raw[tile];
#pragma unroll
    for (int j = 0; j < tile; ++j) {
      const int32_t position = first_position + j * subgroups;
      if (position < end) {
        const int64_t slot = int64_t(table[position / block_size]) * block_size + position % block_size;
        const int64_t offset = slot * token_stride + head_offset;
        k_raw[j] = __ldg(reinterpret_cast<const uint4*>(k_cache + offset));
        v_raw[j] = __ldg(reinterpret_cast<const uint4*>(v_cache + offset));
      } else {
        k_raw[j] = make_uint4(0, 0, 0, 0);
        v_raw[j] = make_uint4(0, 0, 0, 0);
      }
    }

    float scores[tile][group];
#pragma unroll
    for (int j = 0; j < tile; ++j) {
      float k[8];
      unpack8(k_raw[j], k);
#pragma unroll
      for (int g = 0; g < group; ++g) {
        float dot = 0.0f;
#pragma unroll
        for (int i = 0; i < 8; ++i) dot = fmaf(q_frag[g][i], k[i], dot);
        scores[j][g] = dot;
      }
    }
#pragma unroll
    for (int offset = lanes_per_token / 2; offset > 0; offset >>= 1) {
#pragma unroll
      for (int j = 0; j < tile; ++j) {
#pragma unroll
        for (int g = 0; g < group; ++g) scores[j][g] += __shfl_xor_sync(0xffffffffu, scores[j][g], offset);
      }
    }

    // Online softmax, once per round; scores[][] becomes the probabilities (relative to running_max).
#pragma unroll
    for (int g = 0; g < group; ++g) {
      float round_max = -INFINITY;
#pragma unroll
      for (int j = 0; j < tile; ++j) {
        scores[j][g] = first_position + j * subgroups < end ? scores[j][g] * scale_log2 : -INFINITY;
        round_max = fmaxf(round_max, scores[j][g]);
      }
      if (round_max == -INFINITY) {  // no position for this subgroup this round (same on all its lanes)
#pragma unroll
        for (int j = 0; j < tile; ++j) scores[j][g] = 0.0f;
        continue;
      }
      const float new_max = fmaxf(running_max[g], round_max);
      const float correction = exp2f(running_max[g] - new_max);  // 0 on the first update (-inf)
      running_sum[g] *= correction;
#pragma unroll
      for (int i = 0; i < 8; ++i) acc[g][i] *= correction;
#pragma unroll
      for (int j = 0; j < tile; ++j) {
        scores[j][g] = exp2f(scores[j][g] - new_max);  // exactly 0 for masked positions
        running_sum[g] += scores[j][g];
      }
      running_max[g] = new_max;
    }
#pragma unroll
    for (int j = 0; j < tile; ++j) {
      float v[8];
      unpack8(v_raw[j], v);  // zeros for masked positions: 0 * 0, never 0 * garbage
#pragma unroll
      for (int g = 0; g < group; ++g) {
#pragma unroll
        for (int i = 0; i < 8; ++i) acc[g][i] = fmaf(scores[j][g], v[i], acc[g][i]);
      }
    }
  }

  // Merge the subgroups' states (shared memory: subgroups * group * (head_dim + 2) floats, <= 33 KiB).
  __shared__ float shared_max[subgroups][group];
  __shared__ float shared_sum[subgroups][group];
  __shared__ __align__(16) float shared_acc[subgroups][group][head_dim];
  if (dim0 == 0) {
#pragma unroll
    for (int g = 0; g < group; ++g) {
      shared_max[subgroup][g] = running_max[g];
      shared_sum[subgroup][g] = running_sum[g];
    }
  }
#pragma unroll
  for (int g = 0; g < group; ++g) {
    float4* to = reinterpret_cast<float4*>(&shared_acc[subgroup][g][dim0]);
    to[0] = make_float4(acc[g][0], acc[g][1], acc[g][2], acc[g][3]);
    to[1] = make_float4(acc[g][4], acc[g][5], acc[g][6], acc[g][7]);
  }
  __syncthreads();

  for (int index = threadIdx.x; index < group * head_dim; index += split_threads) {
    const int g = index / head_dim;
    const int d = index % head_dim;
    float max_score = -INFINITY;
#pragma unroll
    for (int s = 0; s < subgroups; ++s) max_score = fmaxf(max_score, shared_max[s][g]);
    // max_score is finite: the split holds at least one position, so some subgroup saw a real score.
    float sum = 0.0f, value = 0.0f;
#pragma unroll
    for (int s = 0; s < subgroups; ++s) {
      const float weight = shared_max[s][g] == -INFINITY ? 0.0f : exp2f(shared_max[s][g] - max_score);
      sum = fmaf(weight, shared_sum[s][g], sum);
      value = fmaf(weight, shared_acc[s][g][d], value);
    }
    if (num_splits == 1) {
      out_heads[index] = __float2bfloat16(value / sum);
    } else {
      const int64_t partial = (int64_t(seq) * num_q_heads + first_q_head + g) * max_splits + split;
      workspace.partial_out[partial * head_dim + d] = value;
      if (d == 0) workspace.partial_stats[partial] = make_float2(max_score, sum);
    }
  }
}

template <int head_dim>
__global__ void __launch_bounds__(head_dim)
    decode_combine_kernel(const int32_t* __restrict__ seq_lens, int32_t num_q_heads, int32_t max_context,
                          int32_t max_splits, workspace_view workspace, bf16* __restrict__ out) {
  const int32_t head = blockIdx.x;
  const int32_t seq = blockIdx.y;
  int32_t length = seq_lens[seq];
  length = length < 0 ? 0 : (length > max_context ? max_context : length);  // as the split kernel does
  const int32_t num_splits = (length + decode_split_tokens - 1) / decode_split_tokens;
  if (num_splits <= 1) return;  // the split kernel wrote this row (or its zeros)

  extern __shared__ float2 stats[];  // [max_splits]
  const int64_t first_partial = (int64_t(seq) * num_q_heads + head) * max_splits;
  for (int32_t i = threadIdx.x; i < num_splits; i += head_dim) stats[i] = workspace.partial_stats[first_partial + i];
  __syncthreads();

  float max_score = -INFINITY;
  for (int32_t i = 0; i < num_splits; ++i) max_score = fmaxf(max_score, stats[i].x);
  float sum = 0.0f, value = 0.0f;
  const float* partial_out = workspace.partial_out + first_partial * head_dim + threadIdx.x;
  for (int32_t i = 0; i < num_splits; ++i) {
    const float weight = exp2f(stats[i].x - max_score);  // every split has a finite max
    sum = fmaf(weight, stats[i].y, sum);
    value = fmaf(weight, partial_out[int64_t(i) * head_dim], value);
  }
  out[(int64_t(seq) * num_q_heads + head) * head_dim + threadIdx.x] = __float2bfloat16(value / sum);
}

template <int head_dim, int group>
void launch_split(const decode_attention_args& args, int32_t max_splits, workspace_view workspace,
                  cudaStream_t stream) {
  const dim3 grid(unsigned(max_splits), unsigned(args.num_kv_heads), unsigned(args.num_seqs));
  const float scale_log2 = args.scale * 1.4426950408889634f;  // log2(e): softmax in base 2
  decode_split_kernel<head_dim, group><<<grid, split_threads, 0, stream>>>(
      args.q, args.q_row_stride, args.k_cache, args.v_cache, args.block_tables, args.block_table_stride,
      args.seq_lens, args.num_kv_heads, args.block_size, args.max_context, max_splits, scale_log2, workspace,
      args.out);
  INFLIGHT_CUDA_CHECK_LAUNCH();
}

template <int head_dim>
void launch_for_head_dim(const decode_attention_args& args, int32_t max_splits, workspace_view workspace,
                         cudaStream_t stream) {
  switch (args.num_q_heads / args.num_kv_heads) {
    case 1: launch_split<head_dim, 1>(args, max_splits, workspace, stream); break;
    case 2: launch_split<head_dim, 2>(args, max_splits, workspace, stream); break;
    case 3: launch_split<head_dim, 3>(args, max_splits, workspace, stream); break;
    case 4: launch_split<head_dim, 4>(args, max_splits, workspace, stream); break;
    case 5: launch_split<head_dim, 5>(args, max_splits, workspace, stream); break;
    case 6: launch_split<head_dim, 6>(args, max_splits, workspace, stream); break;
    case 7: launch_split<head_dim, 7>(args, max_splits, workspace, stream); break;
    case 8: launch_split<head_dim, 8>(args, max_splits, workspace, stream); break;
    default: throw std::invalid_argument("decode_attention: num_q_heads / num_kv_heads must be in [1, 8]");
  }
  if (max_splits > 1) {
    const dim3 grid(unsigned(args.num_q_heads), unsigned(args.num_seqs));
    decode_combine_kernel<head_dim><<<grid, head_dim, size_t(max_splits) * sizeof(float2), stream>>>(
        args.seq_lens, args.num_q_heads, args.max_context, max_splits, workspace, args.out);
    INFLIGHT_CUDA_CHECK_LAUNCH();
  }
}

}  // namespace

size_t decode_attention_workspace_bytes(int32_t max_num_seqs, int32_t num_q_heads, int32_t head_dim,
                                        int32_t max_context) {
  const int32_t max_splits = decode_attention_max_splits(max_context);
  if (max_splits <= 1 || max_num_seqs <= 0 || num_q_heads <= 0 || head_dim <= 0) return 0;
  return partial_count(max_num_seqs, num_q_heads, max_splits) * (size_t(head_dim) + 2) * sizeof(float);
}

void decode_attention(const decode_attention_args& args, cudaStream_t stream) {
  require(args.num_seqs >= 0, "decode_attention: num_seqs must be >= 0");
  require(args.num_seqs <= 65535, "decode_attention: num_seqs must be <= 65535 (grid z)");
  require(args.max_context > 0, "decode_attention: max_context must be > 0");
  require(args.head_dim == 64 || args.head_dim == 128, "decode_attention: head_dim must be 64 or 128");
  require(args.num_kv_heads > 0 && args.num_kv_heads <= 65535, "decode_attention: num_kv_heads must be in [1, 65535]");
  require(args.num_q_heads > 0 && args.num_q_heads % args.num_kv_heads == 0,
          "decode_attention: num_q_heads must be a positive multiple of num_kv_heads");
  require(args.num_q_heads / args.num_kv_heads <= max_group,
          "decode_attention: num_q_heads / num_kv_heads must be in [1, 8]");
  require(args.block_size > 0, "decode_attention: block_size must be > 0");
  const int32_t max_splits = decode_attention_max_splits(args.max_context);
  require(size_t(max_splits) * sizeof(float2) <= max_combine_shared_bytes,
          "decode_attention: max_context too large (the combine kernel keeps one float2 per split in shared memory)");
  require(args.block_table_stride >= (args.max_context + args.block_size - 1) / args.block_size,
          "decode_attention: block_table_stride must cover max_context / block_size blocks");
  require(args.q_row_stride % 8 == 0 && args.q_row_stride >= int64_t(args.num_q_heads) * args.head_dim,
          "decode_attention: q_row_stride must be a multiple of 8 and >= num_q_heads * head_dim");
  require(std::isfinite(args.scale), "decode_attention: scale must be finite");
  if (args.num_seqs == 0) return;
  require(args.q != nullptr && aligned16(args.q), "decode_attention: q must be non-null and 16-byte aligned");
  require(args.k_cache != nullptr && aligned16(args.k_cache),
          "decode_attention: k_cache must be non-null and 16-byte aligned");
  require(args.v_cache != nullptr && aligned16(args.v_cache),
          "decode_attention: v_cache must be non-null and 16-byte aligned");
  require(args.block_tables != nullptr, "decode_attention: block_tables is null");
  require(args.seq_lens != nullptr, "decode_attention: seq_lens is null");
  require(args.out != nullptr, "decode_attention: out is null");
  workspace_view workspace{nullptr, nullptr};
  if (max_splits > 1) {
    require(args.workspace != nullptr && aligned16(args.workspace),
            "decode_attention: workspace must be non-null and 16-byte aligned");
    require(args.workspace_bytes >=
                decode_attention_workspace_bytes(args.num_seqs, args.num_q_heads, args.head_dim, args.max_context),
            "decode_attention: workspace_bytes smaller than decode_attention_workspace_bytes(...)");
    workspace = carve_workspace(args.workspace, args.num_seqs, args.num_q_heads, args.head_dim, max_splits);
  }
  if (args.head_dim == 64) {
    launch_for_head_dim<64>(args, max_splits, workspace, stream);
  } else {
    launch_for_head_dim<128>(args, max_splits, workspace, stream);
  }
}

}  // namespace inflight::gpu
