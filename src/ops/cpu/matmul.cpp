// Linear layers (no bias) as single-precision GEMMs through OpenBLAS.
#include <cblas.h>

#include <algorithm>
#include <climits>

#include "core/error.h"
#include "ops/cpu_ops.h"
#include "ops/op_profile.h"

namespace quest::cpu {
namespace {

// cblas takes 32-bit sizes; refuse shapes that would silently wrap.
void check_dims(const char* op, int64_t N, int64_t K, int64_t M) {
  QUEST_CHECK(N >= 0 && K >= 0 && M >= 0, "{}: negative shape N={} K={} M={}", op, N, K, M);
  QUEST_CHECK(N <= INT_MAX && K <= INT_MAX && M <= INT_MAX,
              "{}: shape N={} K={} M={} exceeds the BLAS int range", op, N, K, M);
}

// BLAS requires leading dimensions >= 1 even for empty matrices.
blasint ld(int64_t n) { return static_cast<blasint>(std::max<int64_t>(1, n)); }

}  // namespace

void matmul_forward(float* out, const float* x, const float* w, int64_t N, int64_t K, int64_t M) {
  QUEST_OP_PROFILE("matmul_forward", K, M);
  check_dims("matmul_forward", N, K, M);
  if (N == 0 || M == 0) return;
  // out[N,M] = x[N,K] . w[M,K]^T; beta = 0 overwrites out (BLAS ignores its old contents).
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, blasint(N), blasint(M), blasint(K), 1.0f, x,
              ld(K), w, ld(K), 0.0f, out, ld(M));
}

void matmul_backward(float* dx, float* dw, const float* dout, const float* x, const float* w,
                     int64_t N, int64_t K, int64_t M) {
  QUEST_OP_PROFILE("matmul_backward", K, M);
  check_dims("matmul_backward", N, K, M);
  if (dx && N > 0 && K > 0) {
    // dx[N,K] = dout[N,M] . w[M,K] (overwritten; M = 0 gives zeros through beta = 0)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, blasint(N), blasint(K), blasint(M), 1.0f,
                dout, ld(M), w, ld(K), 0.0f, dx, ld(K));
  }
  if (dw && M > 0 && K > 0 && N > 0) {
    // dw[M,K] += dout[N,M]^T . x[N,K] (beta = 1 accumulates)
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, blasint(M), blasint(K), blasint(N), 1.0f,
                dout, ld(M), x, ld(K), 1.0f, dw, ld(K));
  }
}

}  // namespace quest::cpu
