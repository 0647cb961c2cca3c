#pragma once
// The "vector" layout of a 128-block: each half-warp holds one block, lane h = lane & 15 holds its
// entries 8h .. 8h + 7 in registers (one 16-byte load of bf16, two of fp32), so a warp moves two
// adjacent blocks (512 contiguous bytes of bf16) per load instruction. The helpers here load,
// store and transform blocks in that layout with the CPU's bits (fwht128_vec below).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "quant/cuda/device_math.cuh"

namespace quest::cuda::qdetail {

// ---- 8 consecutive entries per lane (p 16-byte aligned) -----------------------------------------
// bf16 -> fp32 is exact (the high half of the fp32 word); element 0 is the low half of word 0.
__device__ __forceinline__ void unpack8(const uint4& u, float (&v)[8]) {
  const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    v[2 * k] = __uint_as_float(w[k] << 16);
    v[2 * k + 1] = __uint_as_float(w[k] & 0xffff0000u);
  }
}
__device__ __forceinline__ void load8(const __nv_bfloat16* p, float (&v)[8]) {
  unpack8(*reinterpret_cast<const uint4*>(p), v);
}
__device__ __forceinline__ void load8(const float* p, float (&v)[8]) {
  const float4 a = reinterpret_cast<const float4*>(p)[0], b = reinterpret_cast<const float4*>(p)[1];
  v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
}

// Each value rounded once to nearest even, as from_f32<bf16>.
__device__ __forceinline__ void store8(__nv_bfloat16* p, const float (&v)[8]) {
  uint32_t w[4];
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(v[2 * k], v[2 * k + 1]);  // .x: low half
    w[k] = *reinterpret_cast<const uint32_t*>(&h);
  }
  *reinterpret_cast<uint4*>(p) = make_uint4(w[0], w[1], w[2], w[3]);
}
__device__ __forceinline__ void store8(float* p, const float (&v)[8]) {
  reinterpret_cast<float4*>(p)[0] = make_float4(v[0], v[1], v[2], v[3]);
  reinterpret_cast<float4*>(p)[1] = make_float4(v[4], v[5], v[6], v[7]);
}

// ---- the transform of one 128-block per half-warp -----------------------------------------------
// Entry index i = 8h + e: bits 0..2 (e) live in registers, bits 3..6 are lane bits 0..3. The CPU
// (hadamard.cpp, fwht128) runs the stages h = 1, 2, 4, ..., 64 in that order with
// v[j] = a + b, v[j + h] = a - b (a = v[j], b = v[j + h]), then scales by 1/sqrt(128). Here
// h = 1, 2, 4 are register butterflies and h = 8 .. 64 shuffles with lane xor 1 .. 8, in the same
// order. A lane on the j + h side computes a - b as fma(-1, own, partner) = RN(partner - own), the
// other side fma(+1, own, partner) = RN(own + partner): the product by +-1 is exact, so each
// output is the CPU's single IEEE operation on the same two inputs and the result is bitwise the
// CPU's. Every lane of the warp must call it (full-mask shuffles; both halves transform, an idle
// half on dummy values).
// Stages h = 1, 2, 4 of the 8 entries a lane holds (register bits), in that order.
__device__ __forceinline__ void fwht8_regs(float (&v)[8]) {
#pragma unroll
  for (int h = 1; h < 8; h <<= 1) {
#pragma unroll
    for (int j = 0; j < 8; ++j)
      if ((j & h) == 0) butterfly(v[j], v[j + h]);
  }
}

__device__ __forceinline__ void fwht128_vec(float (&v)[8], int lane) {
  fwht8_regs(v);
#pragma unroll
  for (int m = 1; m < 16; m <<= 1) {
    const float sgn = (lane & m) ? -1.0f : 1.0f;
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      const float p = __shfl_xor_sync(kFullMask, v[e], m);
      v[e] = __fmaf_rn(sgn, v[e], p);
    }
  }
#pragma unroll
  for (int e = 0; e < 8; ++e) v[e] = __fmul_rn(v[e], kHtNorm);
}

}  // namespace quest::cuda::qdetail
