#pragma once
// Device helpers of the quantizer kernels: the warp FWHT, the centered grid, the e2m1 rounding and
// deterministic block reductions. Every floating-point operation that the CPU reference performs
// is written here as an explicitly rounded intrinsic (__fadd_rn, __fmul_rn, __fdiv_rn, __dmul_rn,
// ...), which nvcc never contracts into an FMA: the CPU reference is built without contraction
// (ISO C++ mode, no FMA target), so the same sequence of IEEE operations gives the same bits.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace quest::cuda::qdetail {

constexpr unsigned kFullMask = 0xffffffffu;
constexpr float kHtNorm = 0.08838834764831845f;  // 1 / sqrt(128), the CPU's constant

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }
template <class T>
__device__ __forceinline__ T from_f32(float v);
template <>
__device__ __forceinline__ float from_f32<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// ---- the Hadamard transform of one 128-block by one warp
// ------------------------------------------ Layout: lane l holds v[k] = element 32k + l of the
// block (k = 0..3), so loads and stores of the block are coalesced. The CPU (hadamard.cpp, fwht128)
// runs the butterflies over index bit h = 1, 2, ..., 64 in that order, v[j] = a + b and v[j + h] =
// a - b with a = v[j], b = v[j + h], then scales by 1/sqrt(128). Here bits h = 1..16 are lane bits
// (shuffles) and h = 32, 64 are register bits; the stage order is the same and each output is the
// same single IEEE operation on the same two inputs, so the result is bitwise the CPU's.
__device__ __forceinline__ void butterfly(float& lo, float& hi) {
  const float a = lo, b = hi;
  lo = __fadd_rn(a, b);
  hi = __fsub_rn(a, b);
}

__device__ __forceinline__ void fwht128_warp(float (&v)[4], int lane) {
#pragma unroll
  for (int h = 1; h < 32; h <<= 1) {
    const bool upper = (lane & h) != 0;  // this lane holds the j + h side of each pair
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const float p = __shfl_xor_sync(kFullMask, v[k], h);
      v[k] = upper ? __fsub_rn(p, v[k]) : __fadd_rn(v[k], p);
    }
  }
  butterfly(v[0], v[1]);  // h = 32
  butterfly(v[2], v[3]);
  butterfly(v[0], v[2]);  // h = 64
  butterfly(v[1], v[3]);
#pragma unroll
  for (int k = 0; k < 4; ++k) v[k] = __fmul_rn(v[k], kHtNorm);
}

// The same for a block held in memory (a row staged in shared memory), in place: each lane loads
// and stores its own 4 entries, so the caller syncs only where other warps read the block.
__device__ __forceinline__ void fwht128_warp_inplace(float* blk, int lane) {
  float v[4];
#pragma unroll
  for (int k = 0; k < 4; ++k) v[k] = blk[32 * k + lane];
  fwht128_warp(v, lane);
#pragma unroll
  for (int k = 0; k < 4; ++k) blk[32 * k + lane] = v[k];
}

// ---- the centered grid (grid.h)
// -------------------------------------------------------------------
struct DevGrid {
  float scale, step, qmin, qmax;
};

// grid::make: step = 2 * scale / (2^b - 1), q in [1 - 2^(b-1), 2^(b-1)].
__device__ __forceinline__ DevGrid make_grid(int bits, float scale) {
  const float half = float(1 << (bits - 1));
  return DevGrid{scale, __fdiv_rn(__fmul_rn(2.0f, scale), float((1 << bits) - 1)),
                 __fsub_rn(1.0f, half), half};
}

// grid::from_rms: clip value float(ALPHA * rms + 1e-8), in double as on the CPU.
__device__ __forceinline__ DevGrid grid_from_rms(int bits, double alpha, double rms) {
  return make_grid(bits, __double2float_rn(__dadd_rn(__dmul_rn(alpha, rms), 1e-8)));
}

// std::clamp(v, lo, hi) = min(max(v, lo), hi) with std::max(a, b) = a < b ? b : a.
__device__ __forceinline__ float clampf(float v, float lo, float hi) {
  const float m = v < lo ? lo : v;
  return hi < m ? hi : m;
}

// grid::quantize: q = rint(clamp(x) / step + 1/2) (half to even), xq = q * step - step / 2.
// grid_level: the integer level q alone (an integral float in [qmin, qmax]); the odd code of
// docs/LOWBIT_GEMM.md is 2q - 1.
__device__ __forceinline__ float grid_level(float x, const DevGrid& g) {
  const float c = clampf(x, -g.scale, g.scale);
  return clampf(rintf(__fadd_rn(__fdiv_rn(c, g.step), 0.5f)), g.qmin, g.qmax);
}
__device__ __forceinline__ float grid_quantize(float x, const DevGrid& g) {
  const float q = grid_level(x, g);
  return __fsub_rn(__fmul_rn(q, g.step), __fmul_rn(0.5f, g.step));
}

// sqrt(sum / n) (grid::row_rms; 0 for an empty row).
__device__ __forceinline__ double rms_from_sum(double sum_sq, int64_t n) {
  return n > 0 ? __dsqrt_rn(__ddiv_rn(sum_sq, double(n))) : 0.0;
}

// Fp4Quantizer::round_e2m1: the nearest e2m1 level of v >= 0 (grid units), ties to the even
// mantissa (the even level index). Midpoints 0.5 * (L[k] + L[k+1]) are exact.
__device__ __forceinline__ float round_e2m1(float v) {
  constexpr float L[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
  constexpr float M[7] = {0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f};
#pragma unroll
  for (int k = 0; k < 7; ++k) {
    if (v < M[k]) return L[k];
    if (v == M[k]) return L[(k % 2 == 0) ? k : k + 1];
  }
  return L[7];
}

// ---- deterministic reductions
// ---------------------------------------------------------------------- Sum over the warp by xor
// butterflies: a + b and b + a round alike, so every lane ends with the same value and the order is
// fixed by the lane layout.
__device__ __forceinline__ double warp_sum(double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}

// Sum over the CTA (blockDim.x a multiple of 32, at most 1024). scratch: 32 doubles of shared
// memory. The result is valid in thread 0 only. Contains __syncthreads(): call it from every
// thread of the CTA. Fixed order (warp butterflies, then the warps in index order): deterministic.
__device__ __forceinline__ double block_sum(double v, double* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_sum(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  double total = 0.0;
  if (threadIdx.x == 0)
    for (int w = 0; w < warps; ++w) total += scratch[w];
  __syncthreads();  // scratch may be reused right after
  return total;
}

}  // namespace quest::cuda::qdetail
