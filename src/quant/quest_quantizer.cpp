// The grid family: ste, clip(c), trust (QUEST_SPEC.md section 3; with HadamardQuantizer around it,
// hadamard-trust = QuEST and hadamard-clip), plus the identity.
#include <cmath>
#include <cstring>

#include "quant/quantizers.h"

namespace quest {

void IdentityQuantizer::forward(const float* x, float* xq, int64_t rows, int64_t cols) {
  if (x != xq) std::memcpy(xq, x, sizeof(float) * size_t(rows * cols));
}

GridQuantizer::GridQuantizer(int bits, MaskRule rule, std::string name)
    : bits_(bits), rule_(rule), name_(std::move(name)) {}

void GridQuantizer::forward(const float* x, float* xq, int64_t rows, int64_t cols) {
  const bool masking = rule_.type != MaskRule::Type::None;
  if (masking) mask_.reset(rows, cols);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    float* qr = xq + r * cols;
    const double rms = grid::row_rms(xr, cols);  // before writing: x and xq may alias
    const grid::Grid g = grid::from_rms(bits_, rms);
    uint64_t* m = masking ? mask_.row(r) : nullptr;
    // Clip: keep |x| <= c * scale. Trust: keep |xq - x| <= t * rms (half a step by default: every
    // in-range value, and clipped ones within half a step beyond the clip value).
    const float limit = rule_.type == MaskRule::Type::Clip ? float(rule_.factor) * g.scale
                                                           : float(rule_.factor * rms);
    for (int64_t i = 0; i < cols; ++i) {
      const float v = xr[i];
      const float q = grid::quantize(v, g);
      qr[i] = q;
      if (!masking) continue;
      const float dev = rule_.type == MaskRule::Type::Clip ? std::fabs(v) : std::fabs(q - v);
      if (!(dev <= limit)) MaskBits::set(m, i);
    }
  }
}

void GridQuantizer::backward(float* grad, int64_t rows, int64_t cols) {
  if (rule_.type != MaskRule::Type::None) mask_.apply(grad);
}

}  // namespace quest
