// SwiGLU gate: out = silu(a) * b, elementwise, vectorized (ops/cpu/simd.h); the vector body and
// the scalar tail compute the same bits.
#include <algorithm>

#include "core/error.h"
#include "ops/cpu/simd.h"
#include "ops/cpu_ops.h"
#include "ops/op_profile.h"

namespace quest::cpu {
namespace {

using namespace simd;

// 1 / (1 + e^-a): for very negative a, e^-a overflows to inf and the result is a clean 0.
inline float sigmoid(float a) { return 1.0f / (1.0f + exp_scalar(-a)); }
inline vf sigmoid(vf a) { return 1.0f / (1.0f + simd::exp(-a)); }

// Elementwise work in blocks of 1024 over threads: vector body, scalar tail at the very end.
constexpr int64_t kBlock = 1024;

}  // namespace

void swiglu_forward(float* out, const float* a, const float* b, int64_t n) {
  QUEST_OP_PROFILE("swiglu_forward");
  QUEST_CHECK(n >= 0, "swiglu_forward: negative size {}", n);
  const int64_t n_blocks = (n + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static)
  for (int64_t blk = 0; blk < n_blocks; ++blk) {
    const int64_t end = std::min(n, (blk + 1) * kBlock);
    int64_t i = blk * kBlock;
    for (; i + W <= end; i += W) {
      const vf ai = load(a + i);
      store(out + i, ai * sigmoid(ai) * load(b + i));
    }
    for (; i < end; ++i) out[i] = a[i] * sigmoid(a[i]) * b[i];
  }
}

void swiglu_backward(float* da, float* db, const float* dout, const float* a, const float* b,
                     int64_t n) {
  QUEST_OP_PROFILE("swiglu_backward");
  QUEST_CHECK(n >= 0, "swiglu_backward: negative size {}", n);
  // d silu(a)/da = s + a * s * (1 - s), s = sigmoid(a). Inputs are read into locals first so that
  // da/db may alias dout.
  const int64_t n_blocks = (n + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static)
  for (int64_t blk = 0; blk < n_blocks; ++blk) {
    const int64_t end = std::min(n, (blk + 1) * kBlock);
    int64_t i = blk * kBlock;
    for (; i + W <= end; i += W) {
      const vf ai = load(a + i), bi = load(b + i), g = load(dout + i);
      const vf s = sigmoid(ai);
      store(da + i, g * bi * (s + ai * s * (1.0f - s)));
      store(db + i, g * ai * s);
    }
    for (; i < end; ++i) {
      const float ai = a[i], bi = b[i], g = dout[i];
      const float s = sigmoid(ai);
      da[i] = g * bi * (s + ai * s * (1.0f - s));
      db[i] = g * ai * s;
    }
  }
}

}  // namespace quest::cpu
