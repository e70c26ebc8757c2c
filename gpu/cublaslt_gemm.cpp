#include "cublaslt_gemm.hpp"

#include <cublasLt.h>

#include <stdexcept>
#include <string>

#include "cuda_check.hpp"

namespace inflight::gpu {

namespace {

void check(cublasStatus_t status, const char* what) {
  if (status != CUBLAS_STATUS_SUCCESS)
    throw std::runtime_error(std::string("cuBLASLt: ") + what + " failed with status " + std::to_string(int(status)));
}

cublasLtHandle_t as_handle(void* handle) { return static_cast<cublasLtHandle_t>(handle); }

}  // namespace

struct cublaslt_gemm::plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t w_layout = nullptr, x_layout = nullptr, y_layout = nullptr;
  cublasLtMatmulAlgo_t algo{};
  float beta = 0.0f;

  ~plan() {
    if (y_layout) cublasLtMatrixLayoutDestroy(y_layout);
    if (x_layout) cublasLtMatrixLayoutDestroy(x_layout);
    if (w_layout) cublasLtMatrixLayoutDestroy(w_layout);
    if (desc) cublasLtMatmulDescDestroy(desc);
  }
};

cublaslt_gemm::cublaslt_gemm(size_t workspace_bytes) : workspace_bytes_(workspace_bytes) {
  cublasLtHandle_t handle = nullptr;
  check(cublasLtCreate(&handle), "cublasLtCreate");
  handle_ = handle;
  if (workspace_bytes_ > 0) INFLIGHT_CUDA_CHECK(cudaMalloc(&workspace_, workspace_bytes_));
}

cublaslt_gemm::~cublaslt_gemm() {
  plans_.clear();
  if (workspace_) cudaFree(workspace_);
  if (handle_) cublasLtDestroy(as_handle(handle_));
}

cublaslt_gemm::plan& cublaslt_gemm::plan_for(int64_t m, int64_t n, int64_t k, gemm_output output, bool accumulate) {
  if (m <= 0 || n <= 0 || k <= 0)
    throw std::invalid_argument("gemm: dimensions must be positive (m " + std::to_string(m) + ", n " +
                                std::to_string(n) + ", k " + std::to_string(k) + ")");
  const shape_key key{m, n, k, int(output), accumulate};
  if (auto found = plans_.find(key); found != plans_.end()) return *found->second;

  auto p = std::make_unique<plan>();
  p->beta = accumulate ? 1.0f : 0.0f;
  check(cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "cublasLtMatmulDescCreate");
  const cublasOperation_t transpose = CUBLAS_OP_T, keep = CUBLAS_OP_N;
  check(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &transpose, sizeof transpose), "TRANSA");
  check(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &keep, sizeof keep), "TRANSB");
  // Column-major views: W[N,K] row-major is K x N (ld K), transposed by the op; X[M,K] is K x M (ld K);
  // Y[M,N] is N x M (ld N).
  const cudaDataType_t y_type = output == gemm_output::fp32 ? CUDA_R_32F : CUDA_R_16BF;
  check(cublasLtMatrixLayoutCreate(&p->w_layout, CUDA_R_16BF, uint64_t(k), uint64_t(n), k), "W layout");
  check(cublasLtMatrixLayoutCreate(&p->x_layout, CUDA_R_16BF, uint64_t(k), uint64_t(m), k), "X layout");
  check(cublasLtMatrixLayoutCreate(&p->y_layout, y_type, uint64_t(n), uint64_t(m), n), "Y layout");

  cublasLtMatmulPreference_t preference = nullptr;
  check(cublasLtMatmulPreferenceCreate(&preference), "cublasLtMatmulPreferenceCreate");
  check(cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes_,
                                             sizeof workspace_bytes_),
        "workspace preference");
  // No split-K style reductions: with them the summation order over K would depend on the algorithm
  // chosen for each M, so a sequence's logits would change with the batch size (docs/cuda-notes.md).
  const uint32_t reduction = CUBLASLT_REDUCTION_SCHEME_NONE;
  check(cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &reduction,
                                             sizeof reduction),
        "reduction preference");
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t status = cublasLtMatmulAlgoGetHeuristic(as_handle(handle_), p->desc, p->w_layout, p->x_layout,
                                                               p->y_layout, p->y_layout, preference, 1, &result, &found);
  cublasLtMatmulPreferenceDestroy(preference);
  check(status, "cublasLtMatmulAlgoGetHeuristic");
  if (found == 0)
    throw std::runtime_error("cuBLASLt has no algorithm for " + std::to_string(m) + " x " + std::to_string(n) +
                             " x " + std::to_string(k));
  p->algo = result.algo;
  return *plans_.emplace(key, std::move(p)).first->second;
}

void cublaslt_gemm::prepare(int64_t m, int64_t n, int64_t k, gemm_output output, bool accumulate) {
  plan_for(m, n, k, output, accumulate);
}

void cublaslt_gemm::run(const __nv_bfloat16* x, const __nv_bfloat16* w, void* y, gemm_output output, int64_t m,
                        int64_t n, int64_t k, bool accumulate, cudaStream_t stream) {
  plan& p = plan_for(m, n, k, output, accumulate);
  const float alpha = 1.0f;
  check(cublasLtMatmul(as_handle(handle_), p.desc, &alpha, w, p.w_layout, x, p.x_layout, &p.beta, y, p.y_layout, y,
                       p.y_layout, &p.algo, workspace_, workspace_bytes_, stream),
        "cublasLtMatmul");
}

}  // namespace inflight::gpu
