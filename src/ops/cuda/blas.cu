// Linear layers through cuBLASLt: bf16 A and B, fp32 accumulation (CUBLAS_COMPUTE_32F), bf16
// output for the forward and dx, fp32 output accumulated (beta = 1) for dw.
//
// Row-major to column-major: cuBLASLt is column-major, and a row-major [R, C] matrix is, as
// stored, a column-major [C, R] one (its transpose) with leading dimension C. So with the row-major
// x[N,K], w[M,K], dout[N,M]:
//   forward  out[N,M] = x . w^T      <=>  out^T[M,N] = op_T(w_cm[K,M]) . x_cm[K,N]       (TN)
//   dx       dx[N,K]  = dout . w     <=>  dx^T[K,N]  = w_cm[K,M] . dout_cm[M,N]          (NN)
//   dw       dw[M,K] += dout^T . x   <=>  dw^T[K,M] += x_cm[K,N] . op_T(dout_cm[M,N])    (NT)
// where a_cm is the stored buffer read column-major. Each distinct (product, shape, pointer
// alignment) gets a plan (descriptors + an algorithm for the constructor's workspace), built once
// and cached. The workspace is shared by all calls of one Blas: use one Blas per stream (or
// streams that are serialized).
//
// Choosing the algorithm: the heuristic's first answer is not always the fastest on the shapes
// of training (the lm_head's K = 640, N = 50304). So a plan's first call times the heuristic's
// candidates on its own operands (into scratch, never into the caller's output) and keeps the
// fastest of those whose result is bit for bit the first candidate's: the choice changes speed,
// never the numbers, so runs stay reproducible whatever the timing says (split-K algorithms,
// which sum in another order, drop out by that test). QUEST_BLAS_TUNE=0 keeps the heuristic's
// first; QUEST_BLAS_TUNE=log prints each plan's timings to stderr. No tuning while the stream is
// being captured into a graph.
#include <cublasLt.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <unordered_map>

#include "ops/cuda/common.cuh"

namespace quest::cuda {
namespace {

using namespace detail;

void lt_check(cublasStatus_t status, const char* what) {
  if (status != CUBLAS_STATUS_SUCCESS)
    raise("cuBLASLt error ", int(status), " (", cublasLtGetStatusString(status), ") from ", what);
}
#define LT_CHECK(call) lt_check((call), #call)

enum class Product : int { kForward, kDx, kDw };

struct Key {
  Product product;
  int64_t N, K, M;
  uint32_t align_a, align_b, align_c;  // byte alignment of A, B and C = D (2 .. 256)
  bool operator==(const Key&) const = default;
};

struct KeyHash {
  size_t operator()(const Key& k) const {
    size_t h = size_t(k.product);
    for (const uint64_t v : {uint64_t(k.N), uint64_t(k.K), uint64_t(k.M), uint64_t(k.align_a),
                             uint64_t(k.align_b), uint64_t(k.align_c)})
      h = h * 1000003u ^ std::hash<uint64_t>{}(v);
    return h;
  }
};

constexpr int kMaxCandidates = 8;

struct Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;  // c describes C and D
  cublasLtMatmulAlgo_t algo{};
  cublasLtMatmulAlgo_t candidates[kMaxCandidates]{};  // the heuristic's answers, best first
  int n_candidates = 0;
  bool tuned = false;
};

enum class Tuning { kOff, kOn, kLog };

Tuning tuning_from_env() {
  const char* e = std::getenv("QUEST_BLAS_TUNE");
  if (!e) return Tuning::kOn;
  if (std::strcmp(e, "0") == 0) return Tuning::kOff;
  return std::strcmp(e, "log") == 0 ? Tuning::kLog : Tuning::kOn;
}

struct Impl {
  cublasLtHandle_t lt = nullptr;
  std::mutex mutex;
  std::unordered_map<Key, Plan, KeyHash> plans;
  Tuning tuning = tuning_from_env();
};

// The largest power of two (at most 256) dividing the address: the heuristic's alignment promise.
uint32_t alignment(const void* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  uint32_t al = 256;
  while (al > 1 && a % al) al >>= 1;
  return al;
}

// One column-major GEMM: D[m,n] = op(A) . op(B) (+ C when beta = 1), A and B bf16.
struct Gemm {
  cublasOperation_t ta, tb;
  uint64_t m, n, k;
  uint64_t a_rows, a_cols, b_rows, b_cols;  // as stored
  int64_t lda, ldb, ldc;
  cudaDataType_t c_type;
};

Gemm describe(const Key& key) {
  const uint64_t N = uint64_t(key.N), K = uint64_t(key.K), M = uint64_t(key.M);
  switch (key.product) {
    case Product::kForward:  // out^T[M,N] = op_T(w_cm[K,M]) . x_cm[K,N]
      return {CUBLAS_OP_T, CUBLAS_OP_N, M, N, K, K, M, K, N, key.K, key.K, key.M, CUDA_R_16BF};
    case Product::kDx:  // dx^T[K,N] = w_cm[K,M] . dout_cm[M,N]
      return {CUBLAS_OP_N, CUBLAS_OP_N, K, N, M, K, M, M, N, key.K, key.M, key.K, CUDA_R_16BF};
    case Product::kDw:  // dw^T[K,M] += x_cm[K,N] . op_T(dout_cm[M,N])
      return {CUBLAS_OP_N, CUBLAS_OP_T, K, M, N, K, N, M, N, key.K, key.M, key.K, CUDA_R_32F};
  }
  raise("cuda::Blas: unknown product");
}

const char* product_name(Product p) {
  return p == Product::kForward ? "matmul_forward" : p == Product::kDx ? "matmul_backward (dx)"
                                                                       : "matmul_backward (dw)";
}

Plan make_plan(cublasLtHandle_t lt, const Key& key, size_t workspace_bytes) {
  const Gemm g = describe(key);
  Plan p;
  LT_CHECK(cublasLtMatmulDescCreate(&p.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  LT_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &g.ta, sizeof(g.ta)));
  LT_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &g.tb, sizeof(g.tb)));
  LT_CHECK(cublasLtMatrixLayoutCreate(&p.a, CUDA_R_16BF, g.a_rows, g.a_cols, g.lda));
  LT_CHECK(cublasLtMatrixLayoutCreate(&p.b, CUDA_R_16BF, g.b_rows, g.b_cols, g.ldb));
  LT_CHECK(cublasLtMatrixLayoutCreate(&p.c, g.c_type, g.m, g.n, g.ldc));

  cublasLtMatmulPreference_t pref = nullptr;
  LT_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  const uint64_t ws = workspace_bytes;
  LT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                                sizeof(ws)));
  const uint32_t aligns[4] = {key.align_a, key.align_b, key.align_c, key.align_c};
  const cublasLtMatmulPreferenceAttributes_t align_attrs[4] = {
      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
  for (int i = 0; i < 4; ++i)
    LT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, align_attrs[i], &aligns[i], sizeof(uint32_t)));
  cublasLtMatmulHeuristicResult_t results[kMaxCandidates]{};
  int returned = 0;
  const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(lt, p.op, p.a, p.b, p.c, p.c, pref,
                                                           kMaxCandidates, results, &returned);
  cublasLtMatmulPreferenceDestroy(pref);
  if (st == CUBLAS_STATUS_SUCCESS)
    for (int i = 0; i < returned; ++i)
      if (results[i].state == CUBLAS_STATUS_SUCCESS) p.candidates[p.n_candidates++] = results[i].algo;
  if (st != CUBLAS_STATUS_SUCCESS || p.n_candidates == 0) {
    cublasLtMatrixLayoutDestroy(p.a), cublasLtMatrixLayoutDestroy(p.b);
    cublasLtMatrixLayoutDestroy(p.c), cublasLtMatmulDescDestroy(p.op);
    raise("cuda::Blas: no cuBLASLt algorithm for ", product_name(key.product), " N=", key.N,
          " K=", key.K, " M=", key.M, " (alignments ", key.align_a, "/", key.align_b, "/",
          key.align_c, " bytes, status ", int(st), ")");
  }
  p.algo = p.candidates[0];
  return p;
}

// 1 in *differs when a[i] != b[i] for some of the n words.
__global__ void words_differ_kernel(const uint32_t* a, const uint32_t* b, int64_t n, int* differs) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    if (a[i] != b[i]) {
      *differs = 1;
      return;
    }
}

// Device scratch for one tuning: a reference output, a trial output and a flag. ok() is false
// when the memory is not there (then nothing is tuned: the heuristic's first stays).
struct TuneScratch {
  void* ref = nullptr;
  void* trial = nullptr;
  int* flag = nullptr;
  explicit TuneScratch(size_t bytes, cudaStream_t stream) {
    const size_t rounded = (bytes + 3) / 4 * 4;  // whole words, the tail zero in both
    if (cudaMalloc(&ref, rounded) != cudaSuccess || cudaMalloc(&trial, rounded) != cudaSuccess ||
        cudaMalloc(&flag, sizeof(int)) != cudaSuccess) {
      (void)cudaGetLastError();  // an allocation failure is not sticky: clear it
      release();
      return;
    }
    QUEST_CUDA_CHECK(cudaMemsetAsync(ref, 0, rounded, stream));
    QUEST_CUDA_CHECK(cudaMemsetAsync(trial, 0, rounded, stream));
  }
  ~TuneScratch() { release(); }
  TuneScratch(const TuneScratch&) = delete;
  TuneScratch& operator=(const TuneScratch&) = delete;
  bool ok() const { return flag != nullptr; }
  void release() {
    cudaFree(ref), cudaFree(trial), cudaFree(flag);
    ref = trial = nullptr, flag = nullptr;
  }
};

// Times plan's candidates on A and B (beta 0, into scratch) and keeps the fastest whose output
// is bit for bit the first candidate's. Synchronizes the stream (a plan's first call only).
void tune(Impl& impl, Plan& plan, const Key& key, const bf16* A, const bf16* B, void* workspace,
          size_t workspace_bytes, cudaStream_t stream) {
  const Gemm g = describe(key);
  const size_t bytes = size_t(g.m * g.n) * (g.c_type == CUDA_R_32F ? 4 : 2);
  TuneScratch s(bytes, stream);
  if (!s.ok()) {
    if (impl.tuning == Tuning::kLog)
      std::fprintf(stderr, "blas tune %s N=%lld K=%lld M=%lld: no memory for the scratch, not tuned\n",
                   product_name(key.product), (long long)key.N, (long long)key.K, (long long)key.M);
    return;
  }
  const float alpha = 1.0f, beta = 0.0f;
  auto launch = [&](const cublasLtMatmulAlgo_t& algo, void* D) {
    return cublasLtMatmul(impl.lt, plan.op, &alpha, A, plan.a, B, plan.b, &beta, D, plan.c, D,
                          plan.c, &algo, workspace, workspace_bytes, stream);
  };
  LT_CHECK(launch(plan.candidates[0], s.ref));
  cudaEvent_t e0, e1;
  QUEST_CUDA_CHECK(cudaEventCreate(&e0));
  QUEST_CUDA_CHECK(cudaEventCreate(&e1));
  float best = 1e30f;
  char line[1024];
  int used = std::snprintf(line, sizeof line, "blas tune %s N=%lld K=%lld M=%lld:",
                           product_name(key.product), (long long)key.N, (long long)key.K,
                           (long long)key.M);
  for (int c = 0; c < plan.n_candidates; ++c) {
    if (launch(plan.candidates[c], s.trial) != CUBLAS_STATUS_SUCCESS) continue;  // warm-up
    QUEST_CUDA_CHECK(cudaMemsetAsync(s.flag, 0, sizeof(int), stream));
    const int64_t words = int64_t((bytes + 3) / 4);
    words_differ_kernel<<<grid_for(words, 1024), 256, 0, stream>>>(
        static_cast<const uint32_t*>(s.ref), static_cast<const uint32_t*>(s.trial), words, s.flag);
    QUEST_CUDA_LAUNCH_CHECK("words_differ_kernel");
    QUEST_CUDA_CHECK(cudaEventRecord(e0, stream));
    for (int i = 0; i < 3; ++i) launch(plan.candidates[c], s.trial);
    QUEST_CUDA_CHECK(cudaEventRecord(e1, stream));
    int differs = 0;
    QUEST_CUDA_CHECK(cudaMemcpyAsync(&differs, s.flag, sizeof(int), cudaMemcpyDeviceToHost, stream));
    QUEST_CUDA_CHECK(cudaStreamSynchronize(stream));  // the flag is in `differs`, e1 is done
    float ms = 0.f;
    QUEST_CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
    ms /= 3;
    if (used < int(sizeof line))
      used += std::snprintf(line + used, sizeof line - size_t(used), " %d:%.3f%s", c, ms,
                            differs ? "(bits differ)" : "");
    if (!differs && ms < best) best = ms, plan.algo = plan.candidates[c];
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  if (impl.tuning == Tuning::kLog) std::fprintf(stderr, "%s\n", line);
}

}  // namespace

Blas::Blas(size_t workspace_bytes) : workspace_bytes_(workspace_bytes) {
  auto impl = std::make_unique<Impl>();
  LT_CHECK(cublasLtCreate(&impl->lt));
  if (workspace_bytes_ > 0) {
    const cudaError_t st = cudaMalloc(&workspace_, workspace_bytes_);
    if (st != cudaSuccess) {
      cublasLtDestroy(impl->lt);
      QUEST_CUDA_CHECK(st);
    }
  }
  handle_ = impl.release();
}

Blas::~Blas() {
  auto* impl = static_cast<Impl*>(handle_);
  if (!impl) return;
  for (auto& [key, p] : impl->plans) {
    cublasLtMatrixLayoutDestroy(p.a), cublasLtMatrixLayoutDestroy(p.b);
    cublasLtMatrixLayoutDestroy(p.c), cublasLtMatmulDescDestroy(p.op);
  }
  cublasLtDestroy(impl->lt);
  delete impl;
  if (workspace_) cudaFree(workspace_);
}

namespace {

// Runs D = A . B (beta 0) or D += A . B (beta 1) for `key` with its cached plan.
void run(Impl& impl, void* workspace, size_t workspace_bytes, const Key& key, const bf16* A,
         const bf16* B, void* C, float beta, cudaStream_t stream) {
  const Plan* plan;
  {
    std::lock_guard lock(impl.mutex);
    auto it = impl.plans.find(key);
    if (it == impl.plans.end()) it = impl.plans.emplace(key, make_plan(impl.lt, key, workspace_bytes)).first;
    Plan& p = it->second;  // unordered_map nodes are stable
    if (!p.tuned && impl.tuning != Tuning::kOff && p.n_candidates > 1) {
      // Not while a graph is captured (no allocation or synchronization there; a later,
      // uncaptured call tunes). The legacy stream may answer an error while another captures.
      cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
      if (cudaStreamIsCapturing(stream, &capture) != cudaSuccess) {
        (void)cudaGetLastError();
        capture = cudaStreamCaptureStatusActive;
      }
      if (capture == cudaStreamCaptureStatusNone) {
        tune(impl, p, key, A, B, workspace, workspace_bytes, stream);
        p.tuned = true;
      }
    }
    plan = &p;
  }
  const float alpha = 1.0f;
  LT_CHECK(cublasLtMatmul(impl.lt, plan->op, &alpha, A, plan->a, B, plan->b, &beta, C, plan->c, C,
                          plan->c, &plan->algo, workspace, workspace_bytes, stream));
}

void check_dims(const char* op, int64_t N, int64_t K, int64_t M) {
  QUEST_CUDA_REQUIRE(N >= 0 && K >= 0 && M >= 0, "cuda::", op, ": negative shape N=", N, " K=", K,
                     " M=", M);
}

}  // namespace

void Blas::matmul_forward(bf16* out, const bf16* x, const bf16* w, int64_t N, int64_t K, int64_t M,
                          cudaStream_t stream) {
  check_dims("matmul_forward", N, K, M);
  if (N == 0 || M == 0) return;
  if (K == 0) {  // an empty sum: zeros
    QUEST_CUDA_CHECK(cudaMemsetAsync(out, 0, size_t(N * M) * sizeof(bf16), stream));
    return;
  }
  const Key key{Product::kForward, N, K, M, alignment(w), alignment(x), alignment(out)};
  run(*static_cast<Impl*>(handle_), workspace_, workspace_bytes_, key, w, x, out, 0.0f, stream);
}

void Blas::matmul_backward(bf16* dx, float* dw, const bf16* dout, const bf16* x, const bf16* w,
                           int64_t N, int64_t K, int64_t M, cudaStream_t stream,
                           BackwardFlags flags) {
  check_dims("matmul_backward", N, K, M);
  auto& impl = *static_cast<Impl*>(handle_);
  if (dx && N > 0 && K > 0) {
    if (M == 0) {
      if (!flags.dx_accumulate)
        QUEST_CUDA_CHECK(cudaMemsetAsync(dx, 0, size_t(N * K) * sizeof(bf16), stream));
    } else {
      const Key key{Product::kDx, N, K, M, alignment(w), alignment(dout), alignment(dx)};
      run(impl, workspace_, workspace_bytes_, key, w, dout, dx, flags.dx_accumulate ? 1.0f : 0.0f,
          stream);
    }
  }
  if (dw && M > 0 && K > 0) {
    if (N == 0) {
      if (flags.dw_overwrite)
        QUEST_CUDA_CHECK(cudaMemsetAsync(dw, 0, size_t(M * K) * sizeof(float), stream));
    } else {
      const Key key{Product::kDw, N, K, M, alignment(x), alignment(dout), alignment(dw)};
      run(impl, workspace_, workspace_bytes_, key, x, dout, dw, flags.dw_overwrite ? 0.0f : 1.0f,
          stream);
    }
  }
}

}  // namespace quest::cuda
