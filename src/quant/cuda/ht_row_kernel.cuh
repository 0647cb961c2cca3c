#pragma once
// The body of ht_grid_rows_kernel (the grid family with the transform, the row in registers),
// templated on where a row's values come from: its own input tensor (ht_row_quantize.cu) or the
// producer fused in front of it (fused_quantize.cu: RMSNorm, SwiGLU). The invariants are stated
// at the top of ht_row_quantize.cu; a Source only changes how the S x 8 values a lane holds are
// obtained, never the transform, the ordered sum or the quantization that follow.
//
// Source contract (device, all members const):
//   void load(const RowCtx& c, int col, float (&v)[8])  the 8 values at columns col .. col + 7 of
//       row c.r, as the quantizer's input tensor would hold them (already rounded to its type);
//       called once per (lane, block) in the team layout, all before any use;
//   void prefetch(int64_t r, int cols)  asks L2 for row r's inputs (one thread; no values);
//   template <int S> void finish(float (&v)[S][8], const RowCtx& c)  called by every warp of the
//       team after the loads, before the transform; may use c.row (cols floats of shared memory,
//       free at that point) and team_sync, and must leave c.row free again (a team barrier last).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <utility>

#include "core/error.h"
#include "ops/cuda/common.cuh"
#include "ops/cuda/device_info.h"  // device_sm_count
#include "ops/cuda_ops.h"
#include "quant/cuda/device_math.cuh"
#include "quant/cuda/ht_row_common.cuh"
#include "quant/cuda/kernels.h"
#include "quant/cuda/vec_fwht.cuh"

namespace quest::cuda::qdetail {

constexpr int kHtMaxBlocks = 2 * 8 * kVecCtaWarps;  // 128-blocks per row at S = 8, P = 8

// The team position of one warp, for the Source's hooks.
struct RowCtx {
  int64_t r;    // the row
  int cols, nblk;
  int first, stride;  // this warp's blocks: first + stride * s (+ half)
  int team, tw, P, lane;
  float* row;  // the team's cols floats of shared memory
};

using detail::prefetch_row_l2;

// The quantizer's own input tensor x [rows, cols].
template <class TIn>
struct TensorSource {
  const TIn* x;
  __device__ __forceinline__ void load(const RowCtx& c, int col, float (&v)[8]) const {
    load8(x + c.r * c.cols + col, v);
  }
  __device__ __forceinline__ void prefetch(int64_t r, int cols) const { prefetch_row_l2(x, r, cols); }
  template <int S>
  __device__ __forceinline__ void finish(float (&)[S][8], const RowCtx&) const {}
};

// Quantize, mask, optionally transform back and store the team warp's slice.
// With crow (the row's codes, null when not asked for) also the lane's 8 codes, one 8-byte store;
// qr null (codes only, lowbit_quantize): no values are stored. kOffset: the codes are offset codes
// (offset_codes.h) and the lane's sum of those it stores is returned (else 0).
template <bool kFinite, bool kClip, bool kOffset, int S, class TOut>
__device__ __forceinline__ int quantize_slice(float (&v)[S][8], const RowGrid& rg, TOut* qr,
                                              uint8_t* mrow, int8_t* crow, bool ht_out, int nblk,
                                              int first, int stride, int lane) {
  const int hl = lane & 15, half = lane >> 4;
  int code_sum = 0;
  if (crow && !qr && !mrow) {  // codes only (uniform): no values, no mask bits
#pragma unroll
    for (int s = 0; s < S; ++s) {
      const int b0 = first + s * stride;
      if (b0 >= nblk) break;  // warp-uniform
      const int b = b0 + half;
      alignas(8) int8_t c[8];
      quantize8<kFinite, kClip, false, kOffset>(v[s], rg, &c);
      if (b < nblk) {
        const uint2 w = *reinterpret_cast<const uint2*>(c);
        *reinterpret_cast<uint2*>(crow + 128 * b + 8 * hl) = w;
        if constexpr (kOffset) code_sum = code_sum8(w, code_sum);
      }
    }
    return code_sum;
  }
#pragma unroll
  for (int s = 0; s < S; ++s) {
    const int b0 = first + s * stride;
    if (b0 >= nblk) break;  // warp-uniform
    const int b = b0 + half;
    unsigned bits;
    if (crow) {
      alignas(8) int8_t c[8];
      bits = quantize8<kFinite, kClip, true, kOffset>(v[s], rg, &c);
      if (b < nblk) {
        const uint2 w = *reinterpret_cast<const uint2*>(c);
        *reinterpret_cast<uint2*>(crow + 128 * b + 8 * hl) = w;
        if constexpr (kOffset) code_sum = code_sum8(w, code_sum);
      }
    } else {
      bits = quantize8<kFinite, kClip>(v[s], rg);
    }
    if (mrow && b < nblk) mrow[16 * b + hl] = uint8_t(bits);
    if (!qr) continue;  // uniform
    if (ht_out) fwht128_vec(v[s], lane);
    if (b < nblk) store8(qr + 128 * b + 8 * hl, v[s]);
  }
  return code_sum;
}

// At S = 4, 64 registers (4 CTAs = 32 warps per SM: more bytes in flight than 3 CTAs of ~80);
// S = 5 and 6, 3 CTAs; S = 8, 2.
// G: virtual warps summed at once (ordered_row_sum); more chains need more registers while the
// row is live (S = 4, G = 2 spills a few bytes at 64).
// kOffset: a.code_sums set (offset codes and their row sums); a template parameter so that the
// other kernels keep their registers (one kernel with both paths spilled twice as much).
template <class Source, class TOut, int S, bool kClip, int G, bool kOffset>
__global__ void __launch_bounds__(kVecCtaWarps * 32, S <= 4 ? 4 : (S <= 6 ? 3 : 2))
    ht_grid_rows_kernel(Source src, TOut* xq, RowQuantArgs a, TeamShape ts) {
  extern __shared__ float4 smem4[];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, P = 1 << ts.lp;
  const int team = warp >> ts.lp, tw = warp & (P - 1), rows_per_cta = kVecCtaWarps >> ts.lp;
  const int64_t r = int64_t(blockIdx.x) * rows_per_cta + team;
  if (r >= a.rows) return;
  const int cols = int(a.cols), nblk = cols / 128, hl = lane & 15, half = lane >> 4;
  float* row = reinterpret_cast<float*>(smem4) + int64_t(team) * cols;
  double* red_all =
      reinterpret_cast<double*>(reinterpret_cast<float*>(smem4) + int64_t(rows_per_cta) * cols);
  double* red = red_all + 8 * team;
  int* code_part = reinterpret_cast<int*>(red_all + 8 * rows_per_cta) + 8 * team;  // a.code_sums
  const int first = 2 * tw, stride = 2 * P;  // this warp's blocks: first + stride * s (+ half)
  const RowCtx ctx{r, cols, nblk, first, stride, team, tw, P, lane, row};

  // Loads: all of them before any use.
  float v[S][8];
#pragma unroll
  for (int s = 0; s < S; ++s) {
    const int b = first + s * stride + half;
    if (b < nblk) {
      src.load(ctx, 128 * b + 8 * hl, v[s]);
    } else {
#pragma unroll
      for (int e = 0; e < 8; ++e) v[s][e] = 0.0f;
    }
  }
  // A row a later CTA's team will take (ts.ahead rows on: prefetch_rows_ahead): its inputs come
  // from memory while this row computes, so that team's loads find them in L2. Issued after this
  // row's own loads, which come first.
  if (ts.ahead && tw == 0 && lane == 0 && r + ts.ahead < a.rows) src.prefetch(r + ts.ahead, cols);
  src.template finish<S>(v, ctx);

  // Transform; the transformed row is staged for the ordered sum. The loop runs the slots some
  // warp of the team needs, a bound of kernel arguments only (the same for every warp, as the
  // shuffles want); a warp's slot past the row's end transforms the zeros it loaded and stores
  // nothing.
  const int slots = (nblk + stride - 1) >> (ts.lp + 1);
#pragma unroll
  for (int s = 0; s < S; ++s) {
    if (s >= slots) break;
    fwht128_vec(v[s], lane);
    const int b = first + s * stride + half;
    if (b < nblk) store8(row + 128 * b + 8 * hl, v[s]);
  }
  team_sync(team, P);

  // row_quantize_kernel's sum of squares (see the invariants) and the row's grid (its thread 0's).
  const RowGrid rg = team_row_grid<G, kClip>(row, red, cols, ts, team, tw, lane, a);
  if (tw == 0 && lane == 0 && a.step) a.step[r] = rg.g.step;

  uint8_t* mrow =
      (a.mask && a.rule != 0) ? reinterpret_cast<uint8_t*>(a.mask + r * (cols / 64)) : nullptr;
  TOut* qr = xq ? xq + r * cols : nullptr;
  int8_t* crow = a.codes ? a.codes + r * cols : nullptr;
  const int lane_sum =
      rg.finite ? quantize_slice<true, kClip, kOffset>(v, rg, qr, mrow, crow, a.ht_out, nblk, first,
                                                       stride, lane)
                : quantize_slice<false, kClip, kOffset>(v, rg, qr, mrow, crow, a.ht_out, nblk,
                                                        first, stride, lane);
  if constexpr (kOffset) {
    // The row's sum of its offset codes: lanes, then the team's warps in order (exact integers,
    // so the order is only for determinism's sake).
    const int warp_sum = __reduce_add_sync(kFullMask, lane_sum);
    if (P == 1) {
      if (lane == 0) a.code_sums[r] = warp_sum;
      return;
    }
    if (lane == 0) code_part[tw] = warp_sum;
    team_sync(team, P);
    if (tw == 0 && lane == 0) {
      int total = 0;
      for (int w = 0; w < P; ++w) total += code_part[w];
      a.code_sums[r] = total;
    }
  }
}

// How many rows ahead a team asks L2 for its successor's inputs: a quarter of the rows one wave
// of resident CTAs covers (the kernel's occupancy at this shared memory). H100, 64 x 512 tokens,
// per-op profile, two rounds (docs/PERF.md, session 18): add + RMSNorm + quantize 4.96 -> 4.28
// ms a step at 200M, 1.44 -> 1.27 at 30M; a whole wave ahead was slower than none, half a wave
// gained half as much, a sixth about as much. QUEST_QUANT_PREFETCH=0 turns it off,
// =m puts it 1/m of a wave ahead (for before/after in one binary; the bits never change).
// The resident CTAs are cached per thread, device and shared memory size (the occupancy query
// costs host time on every launch otherwise, as lowbit_quantize_fast.cu notes).
template <class Kernel>
int64_t prefetch_rows_ahead(Kernel kernel, size_t smem, int rows_per_cta) {
  static const int divisor = [] {
    const char* e = std::getenv("QUEST_QUANT_PREFETCH");
    return e ? std::max(0, std::atoi(e)) : 4;
  }();
  if (divisor == 0) return 0;
  int device = 0;
  QUEST_CUDA_CHECK(cudaGetDevice(&device));
  static thread_local std::map<std::pair<int, size_t>, int64_t> resident;  // per instantiation
  int64_t& ctas = resident[{device, smem}];
  if (ctas == 0) {
    int per_sm = 0;
    QUEST_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel,
                                                                   kVecCtaWarps * 32, smem));
    ctas = int64_t(device_sm_count(device)) * per_sm;
  }
  return ctas * rows_per_cta / divisor;
}

template <class Source, class TOut, int S, int G>
void launch_ht_steps(const Source& src, TOut* xq, const RowQuantArgs& a, int lp,
                     cudaStream_t stream) {
  const int rows_per_cta = kVecCtaWarps >> lp;
  const size_t smem = size_t(rows_per_cta) * size_t(a.cols) * sizeof(float) +
                      size_t(rows_per_cta) * 8 * sizeof(double) +
                      (a.code_sums ? size_t(rows_per_cta) * 8 * sizeof(int) : 0);
  auto kernel = a.code_sums ? (a.rule == 1 ? ht_grid_rows_kernel<Source, TOut, S, true, G, true>
                                           : ht_grid_rows_kernel<Source, TOut, S, false, G, true>)
                : a.rule == 1 ? ht_grid_rows_kernel<Source, TOut, S, true, G, false>
                              : ht_grid_rows_kernel<Source, TOut, S, false, G, false>;
  if (smem > 48 * 1024)
    QUEST_CUDA_CHECK(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  const int64_t grid = (a.rows + rows_per_cta - 1) / rows_per_cta;
  TeamShape ts = team_shape(int(a.cols), row_kernel_threads(a.cols), lp, G);
  ts.ahead = prefetch_rows_ahead(kernel, smem, rows_per_cta);
  kernel<<<unsigned(grid), kVecCtaWarps * 32, smem, stream>>>(src, xq, a, ts);
  QUEST_CUDA_CHECK(cudaGetLastError());
}

// The shape checks every source shares (the caller checks its own pointers' alignment):
// the transform on, whole 128-blocks, at most kHtMaxBlocks of them, codes only in the Half form
// with <= 7 bits (code sums only with codes). xq (the caller's) may be null only when codes are
// asked for.
inline bool ht_rows_shape_ok(const RowQuantArgs& a) {
  const auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  return a.ht_in && a.cols % 128 == 0 && a.cols / 128 <= kHtMaxBlocks &&
         !(a.codes && (a.ht_out || a.bits > 7 || !aligned(a.codes))) &&
         !(a.code_sums && !a.codes);
}

// Picks the register slice and team size and launches. S = 4 vectors per lane while 8 warps hold
// the row, 6 up to 96 blocks, else 8 (variant 2 forces 8); 5 for rows of 9-10 blocks (200M's
// 1280), which one warp then holds whole; P = the fewest warps that hold the row.
// G (sum chains): 1 at S = 4 and 6 (2 was slower at S = 4, and spills); 4 at S = 8 (measured once
// with 1: 0.48 of a copy at K = 11008 against 0.38 with 4; not switched back untested).
template <class Source, class TOut>
void launch_ht_rows(const Source& src, TOut* xq, const RowQuantArgs& a, cudaStream_t stream) {
  if (a.rows == 0) return;
  const int nblk = int(a.cols / 128);
  const int S = a.vec_variant == 2 || nblk > 2 * 6 * kVecCtaWarps  ? 8
                : nblk > 2 * 4 * kVecCtaWarps                         ? 6
                : nblk > 8 && nblk <= 10                              ? 5
                                                                     : 4;
  int lp = 0;  // log2 of the team's warps
  while (2 * S * (1 << lp) < nblk) ++lp;
  if (S == 8)
    launch_ht_steps<Source, TOut, 8, 4>(src, xq, a, lp, stream);
  else if (S == 6)
    launch_ht_steps<Source, TOut, 6, 1>(src, xq, a, lp, stream);
  else if (S == 5)
    launch_ht_steps<Source, TOut, 5, 1>(src, xq, a, lp, stream);
  else if (a.vec_variant == 3)
    launch_ht_steps<Source, TOut, 4, 2>(src, xq, a, lp, stream);
  else
    launch_ht_steps<Source, TOut, 4, 1>(src, xq, a, lp, stream);
}

}  // namespace quest::cuda::qdetail
