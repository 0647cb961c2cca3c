// RMSNorm: out = x * rstd * w with rstd = 1 / sqrt(mean(x^2) + eps). Row reductions in double,
// vectorized in a fixed lane order (ops/cpu/simd.h).
#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "ops/cpu_ops.h"
#include "ops/cpu/simd.h"
#include "ops/op_profile.h"

namespace quest::cpu {

using namespace simd;

void rmsnorm_forward(float* out, float* rstd, const float* x, const float* w, int64_t N, int64_t d,
                     float eps) {
  QUEST_OP_PROFILE("rmsnorm_forward");
  QUEST_CHECK(N >= 0 && d > 0, "rmsnorm_forward: bad shape N={} d={}", N, d);
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    const float* xr = x + n * d;
    const double ss = sum_squares(xr, d);
    const float r = float(1.0 / std::sqrt(ss / double(d) + double(eps)));
    rstd[n] = r;
    float* o = out + n * d;
    const vf vr = splat(r);
    int64_t j = 0;
    for (; j + W <= d; j += W) store(o + j, load(xr + j) * vr * load(w + j));
    for (; j < d; ++j) o[j] = xr[j] * r * w[j];
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
    // s = sum_j g_j w_j (x_j r) in double, fixed lane order
    const vd rd = splat_d(r);
    vd s0{}, s1{};
    int64_t j = 0;
    for (; j + W <= d; j += W) {
      const vf g = load(gr + j), wv = load(w + j), xv = load(xr + j);
      s0 += lo2(g) * lo2(wv) * (lo2(xv) * rd);
      s1 += hi2(g) * hi2(wv) * (hi2(xv) * rd);
    }
    double s = 0.0;
    for (; j < d; ++j) s += double(gr[j]) * w[j] * (double(xr[j]) * r);
    s += hsum(s0 + s1);
    const float m = float(s / double(d));
    float* dxr = dx + n * d;
    const vf vr = splat(r), vm = splat(m);
    for (j = 0; j + W <= d; j += W)
      store(dxr + j,
            load(dxr + j) + vr * (load(gr + j) * load(w + j) - load(xr + j) * vr * vm));
    for (; j < d; ++j) dxr[j] += r * (gr[j] * w[j] - xr[j] * r * m);
  }
  // dw[j] += sum_n dout[n,j] * xhat[n,j]: threads own column blocks and sum rows in order, so the
  // result does not depend on the thread count (no atomics, no thread-order reductions).
  constexpr int64_t kBlock = 64;
  const int64_t n_blocks = (d + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static)
  for (int64_t blk = 0; blk < n_blocks; ++blk) {
    const int64_t j0 = blk * kBlock, j1 = std::min(d, j0 + kBlock);
    vd acc[kBlock / 2] = {};  // acc[k] holds columns j0 + 2k, j0 + 2k + 1
    for (int64_t n = 0; n < N; ++n) {
      const float* xr = x + n * d;
      const float* gr = dout + n * d;
      const vd r = splat_d(rstd[n]);
      int64_t j = j0;
      for (; j + W <= j1; j += W) {
        const vf g = load(gr + j), xv = load(xr + j);
        acc[(j - j0) / 2] += lo2(g) * (lo2(xv) * r);
        acc[(j - j0) / 2 + 1] += hi2(g) * (hi2(xv) * r);
      }
      for (; j < j1; ++j) acc[(j - j0) / 2][(j - j0) % 2] += double(gr[j]) * (xr[j] * r[0]);
    }
    for (int64_t j = j0; j < j1; ++j) dw[j] += float(acc[(j - j0) / 2][(j - j0) % 2]);
  }
}

}  // namespace quest::cpu
