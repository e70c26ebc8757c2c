// The CUDA backend's matrix products through cuBLASLt: Y[M,N] = X[M,K] · W[N,K]ᵀ with X and W bf16
// row-major (W as GGUF and Hugging Face store a linear layer: one output row per weight row), fp32
// accumulation, Y bf16 (activations) or fp32 (logits). `accumulate` adds into Y instead of overwriting
// it (beta = 1), which fuses a residual add into the projection that feeds it.
//
// cuBLASLt is column-major: the row-major product above is its Yᵀ[N,M] = op(W)[N,K] · Xᵀ[K,M] with W
// transposed (docs/cuda-notes.md). The algorithm for each shape is chosen once by cuBLASLt's heuristic
// and cached, so a step run (or captured into a CUDA graph) after warm-up makes no heuristic calls.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <memory>
#include <tuple>

namespace inflight::gpu {

enum class gemm_output { bf16, fp32 };

class cublaslt_gemm {
 public:
  // Creates the cuBLASLt handle and a workspace of `workspace_bytes` (32 MiB suits Hopper).
  explicit cublaslt_gemm(size_t workspace_bytes = size_t(32) << 20);
  ~cublaslt_gemm();
  cublaslt_gemm(const cublaslt_gemm&) = delete;
  cublaslt_gemm& operator=(const cublaslt_gemm&) = delete;

  // Y = X · Wᵀ (+ Y when accumulate). Throws std::runtime_error when cuBLASLt has no algorithm for the
  // shape or fails, std::invalid_argument for a non-positive dimension.
  void run(const __nv_bfloat16* x, const __nv_bfloat16* w, void* y, gemm_output output, int64_t m, int64_t n,
           int64_t k, bool accumulate, cudaStream_t stream);

  // Picks and caches the algorithm for a shape without running it (before CUDA-graph capture).
  void prepare(int64_t m, int64_t n, int64_t k, gemm_output output, bool accumulate);

 private:
  struct plan;  // descriptors and the chosen algorithm for one shape
  using shape_key = std::tuple<int64_t, int64_t, int64_t, int, bool>;
  plan& plan_for(int64_t m, int64_t n, int64_t k, gemm_output output, bool accumulate);

  void* handle_ = nullptr;  // cublasLtHandle_t, kept opaque so this header needs no cuBLASLt include
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  std::map<shape_key, std::unique_ptr<plan>> plans_;
};

}  // namespace inflight::gpu
