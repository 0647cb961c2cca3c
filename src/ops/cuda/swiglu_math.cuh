#pragma once
// SwiGLU's elementwise math, one definition for every kernel that must give swiglu.cu's bits
// (the fused mask + transform + SwiGLU backward of src/quant/cuda/swiglu_mask_backward.cu): the
// same source expression, inlined, so the compiler forms the same operations (FMA contraction
// included) in each.
#include <cuda_runtime.h>

namespace quest::cuda::detail {

// 1 / (1 + e^-a): for very negative a, e^-a overflows to inf and the result is a clean 0.
__device__ __forceinline__ float swiglu_sigmoid(float a) { return 1.0f / (1.0f + expf(-a)); }

// da, db of out = silu(a) * b for the output gradient g; d silu(a)/da = s + a s (1 - s).
__device__ __forceinline__ void swiglu_grads(float g, float a, float b, float& da, float& db) {
  const float s = swiglu_sigmoid(a);
  da = g * b * (s + a * s * (1.0f - s));
  db = g * a * s;
}

}  // namespace quest::cuda::detail
