// RMSNorm: out = x * rstd * w with rstd = 1 / sqrt(mean(x^2) + eps). Row reductions in double.
#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "ops/cpu_ops.h"
#include "ops/op_profile.h"

namespace quest::cpu {

void rmsnorm_forward(float* out, float* rstd, const float* x, const float* w, int64_t N, int64_t d,
                     float eps) {
  QUEST_OP_PROFILE("rmsnorm_forward");
  QUEST_CHECK(N >= 0 && d > 0, "rmsnorm_forward: bad shape N={} d={}", N, d);
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    const float* xr = x + n * d;
    double ss = 0.0;
    for (int64_t j = 0; j < d; ++j) ss += double(xr[j]) * xr[j];
    const float r = float(1.0 / std::sqrt(ss / double(d) + double(eps)));
    rstd[n] = r;
    float* o = out + n * d;
    for (int64_t j = 0; j < d; ++j) o[j] = xr[j] * r * w[j];
  }
}

void rmsnorm_backward(float* dx, float* dw, const float* dout, const float* x, const float* w,
                      const float* rstd, int64_t N, int64_t d) {
  QUEST_OP_PROFILE("rmsnorm_backward");
  QUEST_CHECK(N >= 0 && d > 0, "rmsnorm_backward: bad shape N={} d={}", N, d);
  // dx: with xhat = x * r and g = dout * w,  dx = r * (g - xhat * mean(g * xhat)).
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    const float* xr = x + n * d;
    const float* gr = dout + n * d;
    const float r = rstd[n];
    double s = 0.0;
    for (int64_t j = 0; j < d; ++j) s += double(gr[j]) * w[j] * (double(xr[j]) * r);
    const float m = float(s / double(d));
    float* dxr = dx + n * d;
    for (int64_t j = 0; j < d; ++j) dxr[j] += r * (gr[j] * w[j] - xr[j] * r * m);
  }
  // dw[j] += sum_n dout[n,j] * xhat[n,j]: threads own column blocks and sum rows in order, so the
  // result does not depend on the thread count (no atomics, no thread-order reductions).
  constexpr int64_t kBlock = 64;
  const int64_t n_blocks = (d + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static)
  for (int64_t blk = 0; blk < n_blocks; ++blk) {
    const int64_t j0 = blk * kBlock, j1 = std::min(d, j0 + kBlock);
    double acc[kBlock] = {};
    for (int64_t n = 0; n < N; ++n) {
      const float* xr = x + n * d;
      const float* gr = dout + n * d;
      const double r = rstd[n];
      for (int64_t j = j0; j < j1; ++j) acc[j - j0] += double(gr[j]) * (xr[j] * r);
    }
    for (int64_t j = j0; j < j1; ++j) dw[j] += float(acc[j - j0]);
  }
}

}  // namespace quest::cpu
