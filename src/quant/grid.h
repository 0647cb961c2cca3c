#pragma once
// The centered uniform grid of QUEST_SPEC.md section 3, one row at a time: 2^b levels
// +-(k + 1/2) * step with the extreme levels at +-scale, no zero level, round-half-to-even.
// Shared by the grid family (ste, clip, trust, their Hadamard forms), sparse 4:8 and PACT.
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "quant/alpha.h"

namespace quest::grid {

// sqrt(mean(x^2)) over the whole row, no mean subtraction (accumulated in double).
inline double row_rms(const float* x, int64_t n) {
  double s = 0.0;
  for (int64_t i = 0; i < n; ++i) s += double(x[i]) * double(x[i]);
  return n > 0 ? std::sqrt(s / double(n)) : 0.0;
}

struct Grid {
  float scale;  // clip value: the extreme levels are +-scale
  float step;   // 2 * scale / (2^b - 1)
  float qmin, qmax;  // q in [1 - 2^(b-1), 2^(b-1)]
};

inline Grid make(int bits, float scale) {
  const float half = float(1 << (bits - 1));
  return Grid{scale, 2.0f * scale / float((1 << bits) - 1), 1.0f - half, half};
}

// The spec's clip value from the row rms: ALPHA[b] * rms + 1e-8.
inline Grid from_rms(int bits, double rms) { return make(bits, float(kAlpha[bits] * rms + 1e-8)); }

// q = round_half_even(clamp(x, -scale, scale) / step + 1/2); xq = q * step - step / 2.
// std::nearbyint rounds half to even under the default rounding mode (quest never changes it).
inline float quantize(float x, const Grid& g) {
  const float c = std::clamp(x, -g.scale, g.scale);
  const float q = std::clamp(std::nearbyint(c / g.step + 0.5f), g.qmin, g.qmax);
  return q * g.step - 0.5f * g.step;
}

}  // namespace quest::grid
