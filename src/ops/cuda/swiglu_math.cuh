#pragma once
// SwiGLU's elementwise math, one definition for every kernel that must give swiglu.cu's bits
// (the fused mask + transform + SwiGLU backward of src/quant/cuda/swiglu_mask_backward.cu, the
// fused SwiGLU + quantizer of src/quant/cuda/fused_quantize.cu): the same source expressions,
// inlined, so the compiler forms the same operations (FMA contraction included) in each.
#include <cuda_runtime.h>

namespace quest::cuda::detail {

// 1 / d rounded to nearest, in two parts. For d with a biased exponent in [1, 252] (normal and
// |d| < 2^126) the hardware reciprocal and one Newton step give it exactly: the fast path nvcc
// itself emits for 1.0f / d (MUFU.RCP, e = d r - 1, r - r e), taken there and only there.
// Elsewhere (0, tiny, huge, inf, NaN) the caller divides. Why split: nvcc wraps each division in
// its own branch to the slow path, which keeps 8 independent sigmoids from overlapping; testing
// 8 values once and then running 8 straight-line reciprocals does not.
// The sigmoid's d = 1 + e^-a is >= 1, +inf or NaN, so there the exponent test is d < 2^126: one
// float compare (false for inf and NaN) instead of nvcc's three integer operations on the bits.
__device__ __forceinline__ bool sigmoid_rcp_fast_path(float d) { return d < 0x1p126f; }
__device__ __forceinline__ float rcp_fast(float d) {
  float r;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(d));
  const float e = __fmaf_rn(d, r, -1.0f);
  return __fmaf_rn(r, -e, r);
}

// 1 / (1 + e^-a) of N values: for very negative a, e^-a overflows to inf and the result is a
// clean 0 (the division's path).
template <int N>
__device__ __forceinline__ void swiglu_sigmoid(const float (&a)[N], float (&s)[N]) {
  float d[N];
  bool fast = true;
#pragma unroll
  for (int k = 0; k < N; ++k) {
    d[k] = 1.0f + expf(-a[k]);
    fast = fast && sigmoid_rcp_fast_path(d[k]);
  }
  if (fast) {
#pragma unroll
    for (int k = 0; k < N; ++k) s[k] = rcp_fast(d[k]);
  } else {
#pragma unroll
    for (int k = 0; k < N; ++k) s[k] = 1.0f / d[k];
  }
}

// silu(a) * b of N values.
template <int N>
__device__ __forceinline__ void swiglu_values(const float (&a)[N], const float (&b)[N],
                                              float (&out)[N]) {
  float s[N];
  swiglu_sigmoid<N>(a, s);
#pragma unroll
  for (int k = 0; k < N; ++k) out[k] = a[k] * s[k] * b[k];
}

// da, db of out = silu(a) * b for the output gradients g, N values; d silu(a)/da = s + a s (1 - s).
template <int N>
__device__ __forceinline__ void swiglu_grads(const float (&g)[N], const float (&a)[N],
                                             const float (&b)[N], float (&da)[N], float (&db)[N]) {
  float s[N];
  swiglu_sigmoid<N>(a, s);
#pragma unroll
  for (int k = 0; k < N; ++k) {
    da[k] = g[k] * b[k] * (s[k] + a[k] * s[k] * (1.0f - s[k]));
    db[k] = g[k] * a[k] * s[k];
  }
}

}  // namespace quest::cuda::detail
