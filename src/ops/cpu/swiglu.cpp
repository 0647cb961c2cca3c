// SwiGLU gate: out = silu(a) * b, elementwise.
#include <cmath>

#include "core/error.h"
#include "ops/cpu_ops.h"
#include "ops/op_profile.h"

namespace quest::cpu {
namespace {

// 1 / (1 + e^-a): for very negative a, e^-a overflows to inf and the result is a clean 0.
inline float sigmoid(float a) { return 1.0f / (1.0f + std::exp(-a)); }

}  // namespace

void swiglu_forward(float* out, const float* a, const float* b, int64_t n) {
  QUEST_OP_PROFILE("swiglu_forward");
  QUEST_CHECK(n >= 0, "swiglu_forward: negative size {}", n);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] * sigmoid(a[i]) * b[i];
}

void swiglu_backward(float* da, float* db, const float* dout, const float* a, const float* b,
                     int64_t n) {
  QUEST_OP_PROFILE("swiglu_backward");
  QUEST_CHECK(n >= 0, "swiglu_backward: negative size {}", n);
  // d silu(a)/da = s + a * s * (1 - s), s = sigmoid(a). Inputs are read into locals first so that
  // da/db may alias dout.
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const float ai = a[i], bi = b[i], g = dout[i];
    const float s = sigmoid(ai);
    da[i] = g * bi * (s + ai * s * (1.0f - s));
    db[i] = g * ai * s;
  }
}

}  // namespace quest::cpu
