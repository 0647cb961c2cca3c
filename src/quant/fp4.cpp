// fp4 (e2m1) with a row-wise scale: QUEST_SPEC.md section 4.
#include <cmath>

#include "quant/quantizers.h"

namespace quest {

Fp4Quantizer::Fp4Quantizer(double trust, std::string name) : trust_(trust), name_(std::move(name)) {}

float Fp4Quantizer::round_e2m1(float v) {
  // Levels 0, .5, 1, 1.5, 2, 3, 4, 6; the even-mantissa levels are the even indices, so a tie
  // between levels k and k+1 goes to whichever index is even (as IEEE round-to-nearest-even would).
  for (int k = 0; k < 7; ++k) {
    const float mid = 0.5f * (kFp4Levels[k] + kFp4Levels[k + 1]);
    if (v < mid) return kFp4Levels[k];
    if (v == mid) return kFp4Levels[(k % 2 == 0) ? k : k + 1];
  }
  return kFp4Levels[7];
}

void Fp4Quantizer::forward(const float* x, float* xq, int64_t rows, int64_t cols) {
  mask_.reset(rows, cols);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    float* qr = xq + r * cols;
    const double rms = grid::row_rms(xr, cols);
    const float unit = float(kFp4Unit * rms);
    const float inv = unit > 0.0f ? 1.0f / unit : 0.0f;
    const float limit = float(trust_ * rms);
    uint64_t* m = mask_.row(r);
    for (int64_t i = 0; i < cols; ++i) {
      const float v = xr[i];
      const float q = std::copysign(round_e2m1(std::fabs(v) * inv) * unit, v);
      qr[i] = q;
      if (!(std::fabs(q - v) <= limit)) MaskBits::set(m, i);
    }
  }
}

}  // namespace quest
