#pragma once
// Device pieces of the memory-speed kernel of the grid family with the transform
// (ht_row_quantize.cu): the invariants that make its bits row_quantize_kernel's are stated here,
// next to the code that relies on them.
#include <cuda_runtime.h>

#include <cstdint>

#include "quant/cuda/device_math.cuh"
#include "quant/cuda/kernels.h"

namespace quest::cuda::qdetail {

constexpr int kVecCtaWarps = 8;  // CTA: 8 warps, 8 / P teams of P warps

// Barrier of one team of `warps` warps (named barrier 1 + team; __syncwarp for one warp).
__device__ __forceinline__ void team_sync(int team, int warps) {
  if (warps == 1)
    __syncwarp();
  else
    asm volatile("bar.sync %0, %1;" ::"r"(team + 1), "r"(warps * 32) : "memory");
}

// grid_level_biased: grid_quantize's level q for finite x and a normal step, as
// u = kRoundMagic + q; y = RN(1 / step). Same bits as grid_level:
// - no clamp of x before the division: for |x| > scale, clamp(rint(RN(x / step) + 1/2)) is the
//   extreme q either way (RN(+-scale / step) + 1/2 is within 2^-16 of qmax / qmin, as
//   step = RN(2 scale / (2^b - 1)), and every step is monotone);
// - x / step is Markstein's correction of x * y: q0 = RN(x y), rem = x - step q0 (exact by FMA),
//   RN(q0 + rem y) = RN(x / step) for normal operands (checked exhaustively over all step
//   significands on the CPU, near-midpoint quotients included). The quotient stays far from
//   overflow (|x| <= sqrt(cols) rms, so |x / step| < 2^14); where it underflows, both it and the
//   correction are below 2^-26 and RN(d + 1/2) = 1/2 either way;
// - rint by the bias: for |t| <= 2^22, RN(t + 1.5 * 2^23) = 1.5 * 2^23 + rint(t) exactly (the
//   sum lies in [2^23, 2^24), where the floats are the integers, and a tie goes to the even one,
//   as rintf's), an add instead of FRND (a quarter-rate conversion);
// - the clamps are min/max of u against the biased bounds (exact integers; the bias keeps the
//   order), equal to clampf's compare-selects on non-NaN values. Where rint(t) = -0
//   (t in [-1/2, 0)) u - kRoundMagic = +0 instead; -0 and +0 give the same code (2q - 1 = -1),
//   xq (q * step - hs = -hs) and mask at every width.
// Then q = u - kRoundMagic exactly, and odd_code_biased gives the code 2q - 1 as the low byte of
// the bits of 2u - (kRoundMagic + 1) = kRoundMagic + 2q - 1 (one FMA, exact; bits(kRoundMagic)
// ends in a zero byte), without F2I.
constexpr float kRoundMagic = 12582912.0f;  // 1.5 * 2^23
__device__ __forceinline__ float grid_level_biased(float x, const DevGrid& g, float y, float umin,
                                                   float umax) {
  const float q0 = __fmul_rn(x, y);
  const float d = __fmaf_rn(__fmaf_rn(-g.step, q0, x), y, q0);  // RN(x / step)
  return fminf(fmaxf(__fadd_rn(__fadd_rn(d, 0.5f), kRoundMagic), umin), umax);
}
__device__ __forceinline__ int8_t odd_code_biased(float u) {
  return int8_t(__float_as_uint(__fmaf_rn(u, 2.0f, -(kRoundMagic + 1.0f))) & 0xffu);
}
// The offset code q - qmin (offset_codes.h) as the low byte of the bits of
// u - qmin = kRoundMagic + (q - qmin) (one add, exact: integers of one binade).
__device__ __forceinline__ int8_t offset_code_biased(float u, float qmin) {
  return int8_t(__float_as_uint(__fadd_rn(u, -qmin)) & 0xffu);
}

// acc plus the sum of the 8 offset codes (bytes 0 .. 127) packed in c.
__device__ __forceinline__ int code_sum8(const uint2 c, int acc) {
  return __dp4a(int(c.y), 0x01010101, __dp4a(int(c.x), 0x01010101, acc));
}

// The row's grid and mask limit (row_quantize_kernel's thread 0), from the ordered double sum.
// finite: the row has no NaN or inf (then neither has any entry) and the step is normal, so
// grid_level_biased applies.
struct RowGrid {
  DevGrid g;
  float limit, y, hs;
  float umin, umax;  // kRoundMagic + qmin, + qmax (grid_level_biased)
  bool finite;
};
template <bool kClip>
__device__ __forceinline__ RowGrid row_grid(double total, int cols, const RowQuantArgs& a) {
  RowGrid rg;
  const double rms = rms_from_sum(total, cols);
  rg.g = grid_from_rms(a.bits, a.unit, rms);
  rg.limit =
      kClip ? __fmul_rn(a.clip_factor, rg.g.scale) : __double2float_rn(__dmul_rn(a.trust, rms));
  rg.finite = isfinite(total) && rg.g.step < 0x1p100f;
  rg.y = __frcp_rn(rg.g.step);
  rg.hs = __fmul_rn(0.5f, rg.g.step);
  rg.umin = __fadd_rn(kRoundMagic, rg.g.qmin);
  rg.umax = __fadd_rn(kRoundMagic, rg.g.qmax);
  return rg;
}

// Quantizes 8 entries in place; returns their mask bits (bit e: entry e masked), the row kernel's
// quantize_one for the grid family (rule 1: |x| <= limit, else |xq - x| <= limit).
// With codes != null also the 8 odd codes 2q - 1 (int8; bits <= 7, so |2q - 1| <= 127), or with
// kOffset the offset codes q - qmin (0 .. 2^bits - 1; offset_codes.h).
// kValues false (codes only: lowbit_quantize): neither the values nor the mask bits (returns 0).
template <bool kFinite, bool kClip, bool kValues = true, bool kOffset = false>
__device__ __forceinline__ unsigned quantize8(float (&v)[8], const RowGrid& rg,
                                              int8_t (*codes)[8] = nullptr) {
  unsigned bits = 0;
#pragma unroll
  for (int e = 0; e < 8; ++e) {
    const float x = v[e];
    float lvl;
    if constexpr (kFinite) {
      const float u = grid_level_biased(x, rg.g, rg.y, rg.umin, rg.umax);
      if (codes) (*codes)[e] = kOffset ? offset_code_biased(u, rg.g.qmin) : odd_code_biased(u);
      lvl = __fsub_rn(u, kRoundMagic);
    } else {
      lvl = grid_level(x, rg.g);
      if (codes)
        (*codes)[e] = kOffset ? int8_t(int(lvl) - int(rg.g.qmin)) : int8_t(2 * int(lvl) - 1);
    }
    if constexpr (!kValues) continue;
    const float q = __fsub_rn(__fmul_rn(lvl, rg.g.step), rg.hs);  // hs = RN(step / 2) either way
    const float dev = kClip ? fabsf(x) : fabsf(__fsub_rn(q, x));
    bits |= (dev <= rg.limit ? 0u : 1u) << e;
    v[e] = q;
  }
  return bits;
}

// The shape of a team and of its row's ordered sum, fixed by the launch (host side, so the kernel
// divides nothing): P = 1 << lp warps a team; T = row_kernel_threads(cols), nvw = T / 32 virtual
// warps, per_warp = ceil(nvw / P) of them a team warp; reps = cols / T where the sum needs no
// guards (cols a multiple of T, nvw a multiple of P: the model's rows) and runs one chain at a
// time (G = 1: with G = 4 chains, at K = 11008, the unguarded loop was slower: 0.214 against
// 0.205 ms on the H100), else 0.
struct TeamShape {
  int lp, T, nvw, per_warp, reps;
  int64_t ahead = 0;  // rows between a team's row and the one it asks L2 for (0: none)
};
inline TeamShape team_shape(int cols, int T, int lp, int G) {
  TeamShape t{lp, T, T / 32, 0, 0, 0};
  t.per_warp = (t.nvw + (1 << lp) - 1) >> lp;
  const bool even = cols % T == 0 && t.nvw % (1 << lp) == 0 && G == 1;
  t.reps = even ? cols / T : 0;
  return t;
}

// row_quantize_kernel's double sum of squares of the transformed row `row` (fp32, shared memory,
// written by the whole team before the call): its CTA of T threads has thread t sum row[t],
// row[t + T], ... in that order, reduce each warp by warp_sum's butterflies and add the warp sums
// to 0.0 in warp order (block_sum). Here "virtual warp" k (its threads 32k .. 32k + 31) is summed
// by team warp k mod P, lane = the thread's lane, so the butterflies pair the same values; a warp
// runs G of its virtual warps at a time as independent chains. P = 1 adds them in registers in k
// order, P > 1 through red[8] (shared memory) and one more team barrier, after which only team
// warp 0 adds them (the others return 0.0: team_row_grid hands them warp 0's grid). Call from all
// warps of the team.
// Control flow: every loop bound is a function of kernel arguments only (the TeamShape), so the
// compiler sees it as uniform and emits the shuffles without convergence code around them. With
// ts.reps (the model's rows) every term exists and the loop has no guards; otherwise a virtual
// warp past nvw (a team warp with fewer of them) sums zeros, adds 0 (exact: the sums are >= +0)
// and is not used.
template <int G>
__device__ __forceinline__ double ordered_row_sum(const float* row, double* red, int cols,
                                                  const TeamShape& ts, int team, int tw,
                                                  int lane) {
  const int P = 1 << ts.lp, T = ts.T, nvw = ts.nvw;
  double total = 0.0;
  for (int j0 = 0; j0 < ts.per_warp; j0 += G) {
    double s[G];
#pragma unroll
    for (int g = 0; g < G; ++g) s[g] = 0.0;
    if (G == 1 && ts.reps) {
      const float* p = row + 32 * (tw + (j0 << ts.lp)) + lane;
      // By 2: the default unrolling's remainder tests cost more than the 4-16 squares they
      // serve (32768 x 640: 0.063 -> 0.061 ms, 32768 x 1280: 0.116 -> 0.112 on the H100).
#pragma unroll 2
      for (int m = 0; m < ts.reps; ++m, p += T) {
        const double d = *p;
        s[0] = __fma_rn(d, d, s[0]);  // exact product: the CTA kernel's ss += v * v
      }
    } else {
      for (int base = 0; base < cols; base += T) {
#pragma unroll
        for (int g = 0; g < G; ++g) {
          const int k = tw + P * (j0 + g), i = base + 32 * k + lane;
          // Past the row or the virtual warps: d = 0, fma(0, 0, s) = s exactly.
          const double d = (k < nvw && i < cols) ? double(row[i]) : 0.0;
          s[g] = __fma_rn(d, d, s[g]);
        }
      }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
#pragma unroll
      for (int g = 0; g < G; ++g) s[g] += __shfl_xor_sync(kFullMask, s[g], o);  // warp_sum
#pragma unroll
    for (int g = 0; g < G; ++g) {
      const int k = tw + P * (j0 + g);
      if (k < nvw) {
        if (P == 1)
          total += s[g];  // k = j0 + g: in order
        else if (lane == 0)
          red[k] = s[g];
      }
    }
  }
  if (P == 1) return total;
  team_sync(team, P);
  if (tw == 0)
    for (int k = 0; k < nvw; ++k) total += red[k];
  return total;
}

// The row's grid from its ordered sum (row_quantize_kernel's thread 0), for every lane of the
// team. P > 1: team warp 0 alone computes it (the double division and square root are ~100
// instructions a warp) and publishes it in red's place (it has read red; the others never do),
// then a team barrier. H100: 200M down (32768 x 3584) 7-10% faster than every warp computing it,
// the other shapes unchanged (docs/PERF.md).
template <int G, bool kClip>
__device__ __forceinline__ RowGrid team_row_grid(const float* row, double* red, int cols,
                                                 const TeamShape& ts, int team, int tw, int lane,
                                                 const RowQuantArgs& a) {
  static_assert(sizeof(RowGrid) <= 8 * sizeof(double), "the grid is published in red's place");
  const double total = ordered_row_sum<G>(row, red, cols, ts, team, tw, lane);
  if (ts.lp == 0) return row_grid<kClip>(total, cols, a);
  RowGrid* shared = reinterpret_cast<RowGrid*>(red);
  if (tw == 0) {
    const RowGrid rg = row_grid<kClip>(total, cols, a);
    __syncwarp();  // every lane of warp 0 has read red
    if (lane == 0) *shared = rg;
  }
  team_sync(team, 1 << ts.lp);
  return *shared;
}

}  // namespace quest::cuda::qdetail
