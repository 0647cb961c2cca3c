// The fused row kernel of the grid family (ste, clip, trust and their Hadamard forms), fp4 and
// sparse 4:8: QUEST_SPEC.md sections 2-4, matching src/quant/{quest_quantizer,fp4,sparse48}.cpp and
// hadamard_quantizer.cpp operation for operation.
//
// The grid family with the transform (the activation quantizers of training) runs on
// ht_row_quantize.cu's faster kernel, which gives this kernel's bits; this one stays the reference
// for it (RowQuantArgs::legacy), and runs everything else.
//
// Kernel invariants (row_quantize_kernel)
// - grid = rows CTAs, one per row; blockDim.x = a multiple of 32 in [64, 256]. The CTA owns row r:
//   it reads x[r, :] (all reads happen before the first __syncthreads, so xq may alias x), writes
//   xq[r, :], every mask word of row r (mask[r * wpr .. r * wpr + wpr), padding bits 0) and
//   step[r].
// - Shared memory: row[cols] fp32 (dynamic), holding in turn x, HT(x), the quantized values, and
//   (Full form) HT of those. 128-blocks go to warps round-robin; the quantization goes by 64-entry
//   mask words (grid, fp4: warp w takes words w, w + warps, ...; lane l quantizes entries 64k + l
//   and 64k + 32 + l and the two ballots form the word) or by groups of 8 (sparse 4:8: one thread
//   per group, writing its mask byte; the mask is little-endian so byte g of a row's words holds
//   entries 8g .. 8g + 7).
// - Statistics: sum of squares in double per thread, block_sum in a fixed order, then thread 0
//   computes the row's grid into shared memory.
#include "core/error.h"
#include "ops/cuda_ops.h"
#include "quant/cuda/device_math.cuh"
#include "quant/cuda/kernels.h"

namespace quest::cuda::qdetail {

namespace {

constexpr int64_t kMaxSharedBytes = 227 * 1024;  // sm_80 / sm_90 opt-in limit per CTA

struct RowStats {
  DevGrid g;
  float limit;      // mask limit: clip -> on |x|, trust -> on |xq - x|
  float unit, inv;  // fp4
};

// HT of every 128-block of the shared row (blocks round-robin over the warps). Caller syncs.
__device__ __forceinline__ void ht_shared_row(float* row, int64_t cols) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  for (int64_t b = warp; b < cols / 128; b += warps) fwht128_warp_inplace(row + b * 128, lane);
}

template <RowFamily F>
__device__ __forceinline__ float quantize_one(float v, const RowStats& s, const RowQuantArgs& a,
                                              bool& masked) {
  float q;
  if constexpr (F == RowFamily::Fp4) {
    // Fp4Quantizer::forward: copysign(round_e2m1(|v| * inv) * unit, v); trust on |q - v|.
    q = copysignf(__fmul_rn(round_e2m1(__fmul_rn(fabsf(v), s.inv)), s.unit), v);
    masked = !(fabsf(__fsub_rn(q, v)) <= s.limit);
  } else {
    q = grid_quantize(v, s.g);
    const float dev = a.rule == 1 ? fabsf(v) : fabsf(__fsub_rn(q, v));
    masked = a.rule != 0 && !(dev <= s.limit);
  }
  return q;
}

template <RowFamily F, class TIn, class TOut>
__global__ void __launch_bounds__(kMaxRowThreads)
    row_quantize_kernel(const TIn* x, TOut* xq, RowQuantArgs a) {
  extern __shared__ float row[];
  __shared__ double red[32];
  __shared__ RowStats stats;
  const int64_t r = blockIdx.x, cols = a.cols, wpr = (cols + 63) / 64;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, warps = blockDim.x >> 5;
  const TIn* xr = x + r * cols;

  for (int64_t i = tid; i < cols; i += blockDim.x) row[i] = to_f32(xr[i]);
  __syncthreads();
  if (a.ht_in) {
    ht_shared_row(row, cols);
    __syncthreads();
  }

  // Row statistics (grid::row_rms: double sum of squares, no mean subtraction).
  double ss = 0.0;
  for (int64_t i = tid; i < cols; i += blockDim.x) {
    const double v = row[i];
    ss += v * v;  // exact product (24-bit mantissas), so contraction cannot change it
  }
  ss = block_sum(ss, red);
  if (tid == 0) {
    const double rms = rms_from_sum(ss, cols);
    RowStats s{};
    if constexpr (F == RowFamily::Fp4) {
      s.unit = __double2float_rn(__dmul_rn(a.unit, rms));
      s.inv = s.unit > 0.0f ? __fdiv_rn(1.0f, s.unit) : 0.0f;
      s.limit = __double2float_rn(__dmul_rn(a.trust, rms));
      if (a.step) a.step[r] = s.unit;
    } else {
      s.g = grid_from_rms(a.bits, a.unit, rms);
      s.limit = a.rule == 1 ? __fmul_rn(a.clip_factor, s.g.scale)
                            : __double2float_rn(__dmul_rn(a.trust, rms));
      if (a.step) a.step[r] = s.g.step;
    }
    stats = s;
  }
  __syncthreads();
  const RowStats s = stats;
  uint64_t* mrow = (a.mask && a.rule != 0) ? a.mask + r * wpr : nullptr;

  if constexpr (F == RowFamily::Sparse48) {
    // Sparse48Quantizer::forward: per group of 8 = 4 adjacent pairs, zero the 2 pairs of smallest
    // squared norm (ties: the lower index counts as smaller), grid on the rest, trust mask against
    // the sparsified value. cols % 8 == 0 (checked on the host).
    uint8_t* mbytes = reinterpret_cast<uint8_t*>(mrow);
    const int64_t groups = cols / 8;
    for (int64_t gi = tid; gi < wpr * 8; gi += blockDim.x) {
      if (gi >= groups) {  // padding bytes of the last word
        if (mbytes) mbytes[gi] = 0;
        continue;
      }
      float* grp = row + gi * 8;
      float v[8], norm[4];
#pragma unroll
      for (int e = 0; e < 8; ++e) v[e] = grp[e];
#pragma unroll
      for (int p = 0; p < 4; ++p)
        norm[p] = __fadd_rn(__fmul_rn(v[2 * p], v[2 * p]), __fmul_rn(v[2 * p + 1], v[2 * p + 1]));
      unsigned bits = 0;
#pragma unroll
      for (int p = 0; p < 4; ++p) {
        int rank = 0;
#pragma unroll
        for (int o = 0; o < 4; ++o) rank += (norm[o] < norm[p]) || (norm[o] == norm[p] && o < p);
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const float xv = v[2 * p + e];
          const float q = rank < 2 ? 0.0f : grid_quantize(xv, s.g);
          grp[2 * p + e] = q;
          if (!(fabsf(__fsub_rn(q, xv)) <= s.limit)) bits |= 1u << (2 * p + e);
        }
      }
      if (mbytes) mbytes[gi] = uint8_t(bits);
    }
  } else {
    for (int64_t w = warp; w < wpr; w += warps) {
      const int64_t i0 = w * 64 + lane, i1 = i0 + 32;
      bool m0 = false, m1 = false;
      if (i0 < cols) row[i0] = quantize_one<F>(row[i0], s, a, m0);
      if (i1 < cols) row[i1] = quantize_one<F>(row[i1], s, a, m1);
      const unsigned lo = __ballot_sync(kFullMask, m0), hi = __ballot_sync(kFullMask, m1);
      if (mrow && lane == 0) mrow[w] = (uint64_t(hi) << 32) | uint64_t(lo);
    }
  }
  __syncthreads();
  if (a.ht_out) {
    ht_shared_row(row, cols);
    __syncthreads();
  }
  TOut* qr = xq + r * cols;
  for (int64_t i = tid; i < cols; i += blockDim.x) qr[i] = from_f32<TOut>(row[i]);
}

template <RowFamily F, class TIn, class TOut>
void launch_family(const TIn* x, TOut* xq, const RowQuantArgs& a, cudaStream_t stream) {
  const size_t smem = size_t(a.cols) * sizeof(float);
  auto kernel = row_quantize_kernel<F, TIn, TOut>;
  if (smem > 48 * 1024)
    QUEST_CUDA_CHECK(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  kernel<<<unsigned(a.rows), row_kernel_threads(a.cols), smem, stream>>>(x, xq, a);
  QUEST_CUDA_CHECK(cudaGetLastError());
}

}  // namespace

int row_kernel_threads(int64_t cols) {
  // About 4 entries per thread, at least 2 and at most 8 warps.
  const int64_t t = ((cols / 4 + 31) / 32) * 32;
  return int(t < 64 ? 64 : (t > kMaxRowThreads ? kMaxRowThreads : t));
}

int64_t row_quantize_max_cols() {
  // Static shared memory of the kernel: red (256 B) + stats (< 64 B); keep 1 KiB of margin.
  return (kMaxSharedBytes - 1024) / int64_t(sizeof(float));
}

template <class TIn, class TOut>
void launch_row_quantize(RowFamily family, const TIn* x, TOut* xq, const RowQuantArgs& a,
                         cudaStream_t stream) {
  QUEST_QUANT_REQUIRE(a.cols > 0 && a.cols <= row_quantize_max_cols(), "CUDA quantizer: rows of ",
                      a.cols, " entries (the limit is ", row_quantize_max_cols(), ")");
  QUEST_QUANT_REQUIRE(a.rows <= int64_t(0x7fffffff), "CUDA quantizer: ", a.rows,
                      " rows are too many");
  QUEST_QUANT_REQUIRE(!(a.ht_in || a.ht_out) || a.cols % 128 == 0,
                      "CUDA quantizer: the Hadamard transform needs cols % 128 == 0, got ", a.cols);
  QUEST_QUANT_REQUIRE(family != RowFamily::Sparse48 || a.cols % 8 == 0,
                      "CUDA quantizer: 4:8 sparsity needs cols % 8 == 0, got ", a.cols);
  QUEST_QUANT_REQUIRE(family == RowFamily::Fp4 || (a.bits >= 1 && a.bits <= 8),
                      "CUDA quantizer: bits ", a.bits, " out of range");
  if (a.rows == 0) return;
  if (family == RowFamily::Grid && !a.legacy && launch_ht_grid_rows(x, xq, a, stream)) return;
  QUEST_QUANT_REQUIRE(!a.codes, "CUDA quantizer: integer codes need the grid family with the ",
                      "transform in the half form, bits <= 7, rows of at most 16384 entries and ",
                      "16-byte aligned buffers");
  switch (family) {
    case RowFamily::Grid:
      launch_family<RowFamily::Grid>(x, xq, a, stream);
      break;
    case RowFamily::Fp4:
      launch_family<RowFamily::Fp4>(x, xq, a, stream);
      break;
    case RowFamily::Sparse48:
      launch_family<RowFamily::Sparse48>(x, xq, a, stream);
      break;
  }
}

template void launch_row_quantize<float, float>(RowFamily, const float*, float*,
                                                const RowQuantArgs&, cudaStream_t);
template void launch_row_quantize<float, bf16>(RowFamily, const float*, bf16*, const RowQuantArgs&,
                                               cudaStream_t);
template void launch_row_quantize<bf16, bf16>(RowFamily, const bf16*, bf16*, const RowQuantArgs&,
                                              cudaStream_t);
template void launch_row_quantize<bf16, float>(RowFamily, const bf16*, float*, const RowQuantArgs&,
                                               cudaStream_t);

}  // namespace quest::cuda::qdetail
