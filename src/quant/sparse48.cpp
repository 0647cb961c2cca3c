// 4:8 pair sparsity + b-bit grid (weights only): QUEST_SPEC.md section 4.
#include <cmath>

#include "core/error.h"
#include "quant/quantizers.h"

namespace quest {

Sparse48Quantizer::Sparse48Quantizer(int bits, double trust, std::string name)
    : bits_(bits), trust_(trust), name_(std::move(name)) {}

void Sparse48Quantizer::forward(const float* x, float* xq, int64_t rows, int64_t cols) {
  QUEST_CHECK(cols % 8 == 0, "{}: 4:8 sparsity needs rows of a multiple of 8 entries, got {}",
              name_, cols);
  mask_.reset(rows, cols);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    float* qr = xq + r * cols;
    const double rms = grid::row_rms(xr, cols);  // the dense row's statistics
    const grid::Grid g = grid::from_rms(bits_, rms);
    const float limit = float(trust_ * rms);
    uint64_t* m = mask_.row(r);
    for (int64_t g0 = 0; g0 < cols; g0 += 8) {
      float norm[4];
      for (int p = 0; p < 4; ++p) {
        const float a = xr[g0 + 2 * p], b = xr[g0 + 2 * p + 1];
        norm[p] = a * a + b * b;  // squared L2: same order
      }
      for (int p = 0; p < 4; ++p) {
        // Rank of pair p among the 4 (ties: the lower index counts as smaller); the 2 smallest go.
        int rank = 0;
        for (int o = 0; o < 4; ++o)
          rank += (norm[o] < norm[p]) || (norm[o] == norm[p] && o < p);
        for (int e = 0; e < 2; ++e) {
          const int64_t i = g0 + 2 * p + e;
          const float v = xr[i];
          const float q = rank < 2 ? 0.0f : grid::quantize(v, g);
          qr[i] = q;
          if (!(std::fabs(q - v) <= limit)) MaskBits::set(m, i);
        }
      }
    }
  }
}

}  // namespace quest
