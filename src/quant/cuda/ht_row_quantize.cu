// The grid family's Hadamard row quantizer (hadamard-ste / -clip / -trust, both forms) with the
// row slice in registers, and the dispatch of that family to the memory-speed kernels
// (launch_ht_grid_rows). It computes the SAME bits as row_quantize_kernel (row_quantize.cu),
// which stays the reference and the fallback.
//
// Why new kernels: row_quantize_kernel runs one CTA per row through a chain of barriers (2-byte
// loads into shared memory, transform, sum, one thread's grid, quantize, store); with few bytes in
// flight per SM it reached a third of the memory bandwidth. This kernel issues a row's loads at
// once (16 bytes a lane), keeps the row in registers and spends its barriers on teams of 1-8
// warps; it is bound by instruction issue, not by memory (docs/PERF.md).
//
// Kernel invariants (ht_grid_rows_kernel)
// - CTA = 8 warps; a row is owned by a team of P warps (P = 1, 2, 4, 8; 8 / P rows per CTA, team
//   i owns row 8 / P * blockIdx.x + i). The team reads x[r, :], writes xq[r, :], the row's mask
//   bytes and step[r], nothing else; a team past the last row exits whole (its barriers count only
//   its own warps: named barrier 1 + team, or __syncwarp for P = 1).
// - Registers: the row lives in registers from load to store, in vec_fwht.cuh's layout: in step s
//   (s < S) warp w of the team holds blocks 2 P s + 2 w (lanes 0-15) and + 1 (lanes 16-31), lane
//   h = lane & 15 entries 8h .. 8h + 7. All S loads are issued before any use. Each warp reads its
//   blocks before it writes them and writes no other block, so xq may alias x.
// - The double sum of squares is row_quantize_kernel's, operation for operation (its order is
//   described at ordered_row_sum, ht_row_common.cuh): the transformed row is staged in shared
//   memory (fp32, cols floats per team; 8 doubles per team for the cross-warp sums) and summed in
//   that order. Same step, hence same bits.
// - Quantization: quantize8 (ht_row_common.cuh): grid_quantize's bits, through its finite-row
//   arithmetic where the row is finite.
// - Mask: lane h's 8 entries are byte 16 b + h of the row's mask words (little-endian words,
//   entry 64 w + i is bit i of word w), one byte store per lane; every byte of the row is written.
#include "core/error.h"
#include "ops/cuda_ops.h"
#include "quant/cuda/device_math.cuh"
#include "quant/cuda/ht_row_common.cuh"
#include "quant/cuda/kernels.h"
#include "quant/cuda/vec_fwht.cuh"

namespace quest::cuda::qdetail {

namespace {

constexpr int kCtaWarps = kVecCtaWarps;
constexpr int kMaxBlocks = 2 * 8 * kCtaWarps;  // 128-blocks per row at S = 8, P = 8

// Quantize, mask, optionally transform back and store the team warp's slice.
// With crow (the row's codes, null when not asked for) also the lane's 8 codes, one 8-byte store.
template <bool kFinite, bool kClip, int S, class TOut>
__device__ __forceinline__ void quantize_slice(float (&v)[S][8], const RowGrid& rg, TOut* qr,
                                               uint8_t* mrow, int8_t* crow, bool ht_out, int nblk,
                                               int first, int stride, int lane) {
  const int hl = lane & 15, half = lane >> 4;
#pragma unroll
  for (int s = 0; s < S; ++s) {
    const int b0 = first + s * stride;
    if (b0 >= nblk) break;  // warp-uniform
    const int b = b0 + half;
    unsigned bits;
    if (crow) {
      alignas(8) int8_t c[8];
      bits = quantize8<kFinite, kClip>(v[s], rg, &c);
      if (b < nblk)
        *reinterpret_cast<uint2*>(crow + 128 * b + 8 * hl) = *reinterpret_cast<const uint2*>(c);
    } else {
      bits = quantize8<kFinite, kClip>(v[s], rg);
    }
    if (mrow && b < nblk) mrow[16 * b + hl] = uint8_t(bits);
    if (ht_out) fwht128_vec(v[s], lane);
    if (b < nblk) store8(qr + 128 * b + 8 * hl, v[s]);
  }
}

// At S = 4, 64 registers (4 CTAs = 32 warps per SM: more bytes in flight than 3 CTAs of ~80).
// G: virtual warps summed at once (ordered_row_sum); more chains need more registers while the
// row is live (S = 4, G = 2 spills a few bytes at 64).
template <class TIn, class TOut, int S, bool kClip, int G>
__global__ void __launch_bounds__(kCtaWarps * 32, S == 4 ? 4 : 2)
    ht_grid_rows_kernel(const TIn* x, TOut* xq, RowQuantArgs a, int P, int T) {
  extern __shared__ float4 smem4[];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int team = warp / P, tw = warp - team * P, rows_per_cta = kCtaWarps / P;
  const int64_t r = int64_t(blockIdx.x) * rows_per_cta + team;
  if (r >= a.rows) return;
  const int cols = int(a.cols), nblk = cols / 128, hl = lane & 15, half = lane >> 4;
  float* row = reinterpret_cast<float*>(smem4) + int64_t(team) * cols;
  double* red =
      reinterpret_cast<double*>(reinterpret_cast<float*>(smem4) + int64_t(rows_per_cta) * cols) +
      8 * team;
  const int first = 2 * tw, stride = 2 * P;  // this warp's blocks: first + stride * s (+ half)

  // Loads: all of them before any use.
  const TIn* xr = x + r * cols;
  float v[S][8];
#pragma unroll
  for (int s = 0; s < S; ++s) {
    const int b = first + s * stride + half;
    if (b < nblk) {
      load8(xr + 128 * b + 8 * hl, v[s]);
    } else {
#pragma unroll
      for (int e = 0; e < 8; ++e) v[s][e] = 0.0f;
    }
  }

  // Transform; the transformed row is staged for the ordered sum.
#pragma unroll
  for (int s = 0; s < S; ++s) {
    const int b0 = first + s * stride;
    if (b0 >= nblk) break;  // warp-uniform
    fwht128_vec(v[s], lane);
    const int b = b0 + half;
    if (b < nblk) store8(row + 128 * b + 8 * hl, v[s]);
  }
  team_sync(team, P);

  // row_quantize_kernel's sum of squares (see the invariants).
  const double total = ordered_row_sum<G>(row, red, cols, T, team, tw, P, lane);

  // The row's grid (row_quantize_kernel's thread 0, computed by every warp of the team).
  const RowGrid rg = row_grid<kClip>(total, cols, a);
  if (tw == 0 && lane == 0 && a.step) a.step[r] = rg.g.step;

  uint8_t* mrow =
      (a.mask && a.rule != 0) ? reinterpret_cast<uint8_t*>(a.mask + r * (cols / 64)) : nullptr;
  TOut* qr = xq + r * cols;
  int8_t* crow = a.codes ? a.codes + r * cols : nullptr;
  if (rg.finite)
    quantize_slice<true, kClip>(v, rg, qr, mrow, crow, a.ht_out, nblk, first, stride, lane);
  else
    quantize_slice<false, kClip>(v, rg, qr, mrow, crow, a.ht_out, nblk, first, stride, lane);
}

template <class TIn, class TOut, int S, int G>
void launch_steps(const TIn* x, TOut* xq, const RowQuantArgs& a, int P, cudaStream_t stream) {
  const int rows_per_cta = kCtaWarps / P;
  const size_t smem = size_t(rows_per_cta) * size_t(a.cols) * sizeof(float) +
                      size_t(rows_per_cta) * 8 * sizeof(double);
  auto kernel = a.rule == 1 ? ht_grid_rows_kernel<TIn, TOut, S, true, G>
                            : ht_grid_rows_kernel<TIn, TOut, S, false, G>;
  if (smem > 48 * 1024)
    QUEST_CUDA_CHECK(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  const int64_t grid = (a.rows + rows_per_cta - 1) / rows_per_cta;
  kernel<<<unsigned(grid), kCtaWarps * 32, smem, stream>>>(x, xq, a, P,
                                                             row_kernel_threads(a.cols));
  QUEST_CUDA_CHECK(cudaGetLastError());
}

}  // namespace

template <class TIn, class TOut>
bool launch_ht_grid_rows(const TIn* x, TOut* xq, const RowQuantArgs& a, cudaStream_t stream) {
  const auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  if (!a.ht_in || a.cols % 128 != 0 || a.cols / 128 > kMaxBlocks || !aligned(x) || !aligned(xq) ||
      (a.codes && (a.ht_out || a.bits > 7 || !aligned(a.codes))))
    return false;
  if (a.rows == 0) return true;
  const int nblk = int(a.cols / 128);
  // S = 4 vectors per lane unless the row needs more than 8 warps (or variant 2 asks for 8);
  // P = the fewest warps that hold the row. G (sum chains): 1 at S = 4 (2 was slower, and
  // spills); 4 at S = 8 (measured once with 1: 0.48 of a copy at K = 11008 against 0.38 with 4;
  // not switched back untested).
  const int S = a.vec_variant == 2 || nblk > 2 * 4 * kCtaWarps ? 8 : 4;
  int P = 1;
  while (2 * S * P < nblk) P *= 2;
  if (S == 8)
    launch_steps<TIn, TOut, 8, 4>(x, xq, a, P, stream);
  else if (a.vec_variant == 3)
    launch_steps<TIn, TOut, 4, 2>(x, xq, a, P, stream);
  else
    launch_steps<TIn, TOut, 4, 1>(x, xq, a, P, stream);
  return true;
}

template bool launch_ht_grid_rows<float, float>(const float*, float*, const RowQuantArgs&,
                                                cudaStream_t);
template bool launch_ht_grid_rows<float, bf16>(const float*, bf16*, const RowQuantArgs&,
                                               cudaStream_t);
template bool launch_ht_grid_rows<bf16, bf16>(const bf16*, bf16*, const RowQuantArgs&,
                                              cudaStream_t);
template bool launch_ht_grid_rows<bf16, float>(const bf16*, float*, const RowQuantArgs&,
                                               cudaStream_t);

}  // namespace quest::cuda::qdetail
