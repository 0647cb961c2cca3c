// Softmax cross-entropy over the first V of Vp columns (the rest is vocabulary padding).
// Stable: the row maximum is subtracted; exponentials (single precision, vectorized, computed once
// per element) are summed and the loss is formed in double.
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"
#include "ops/cpu_ops.h"
#include "ops/op_profile.h"
#include "ops/cpu/simd.h"

namespace quest::cpu {

double cross_entropy(float* dlogits, float* losses, const float* logits, const int32_t* targets,
                     int64_t N, int64_t V, int64_t Vp, float grad_scale) {
  QUEST_OP_PROFILE("cross_entropy");
  QUEST_CHECK(N >= 0 && V > 0 && Vp >= V, "cross_entropy: bad shape N={} V={} Vp={}", N, V, Vp);
  // Validated serially: an exception must not escape an OpenMP region.
  for (int64_t n = 0; n < N; ++n)
    QUEST_CHECK(targets[n] >= 0 && targets[n] < V,
                "cross_entropy: target {} at row {} is outside the vocabulary [0, {})", targets[n],
                n, V);
  // Per-row losses summed afterwards in row order: the total does not depend on the threads.
  std::vector<double> row_loss(static_cast<size_t>(N));
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    const float* l = logits + n * Vp;
    const int32_t y = targets[n];
    const float ly = l[y];  // read before dlogits (which may be l) is written
    const float mx = simd::max(l, V);
    // One pass of exponentials: the gradient row receives e^(l - mx), which is then scaled.
    float* g = dlogits ? dlogits + n * Vp : nullptr;
    const double sum = simd::exp_shift_sum(g, l, mx, V);
    const double lse = double(mx) + std::log(sum);
    row_loss[size_t(n)] = lse - double(ly);
    if (g) {
      // e^(l - mx) / sum rather than e^(l - lse): mx is exact, a float lse is not.
      simd::scale(g, float(double(grad_scale) / sum), V);
      g[y] -= grad_scale;
      std::fill(g + V, g + Vp, 0.0f);
    }
  }
  double total = 0.0;
  for (int64_t n = 0; n < N; ++n) {
    total += row_loss[size_t(n)];
    if (losses) losses[n] = float(row_loss[size_t(n)]);
  }
  return total;
}

}  // namespace quest::cpu
