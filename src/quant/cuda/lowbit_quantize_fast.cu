// lowbit_quantize_fast (lowbit_gemm.h): the forward-only activation quantizer of the int8
// product, the Hadamard grid family with codes and steps only, at close to the memory speed of
// one read of x. The training quantizer (lowbit_quantize's row teams) keeps row_quantize_kernel's
// bits, and with them an ordered double sum of squares staged through shared memory and an
// exactly rounded division per entry: ~44 instructions an entry, issue-bound at 2x a read of x
// (docs/PERF.md). This kernel keeps the method and gives up those bits where they cost:
//
// - The transform is the CPU's fwht128 operation for operation (stages h = 1 .. 64 in order, each
//   output one IEEE add or subtract of the same two inputs) WITHOUT its final scaling by
//   kHtNorm = 1/sqrt(128): that factor moves into the row's sum (times kHtNorm^2, in double) and
//   into the per-entry multiplier y = RN(kHtNorm / step).
// - The sum of squares is accumulated in fp32 by each lane over its 32 entries (4 chains of 8),
//   then in double across lanes and warps, in a fixed order (deterministic). Its relative error
//   (~1e-7) moves the float clip scale by an ulp in some rows, against the exact double sum.
// - The level is q = rint(v y + 1/2) by one FMA and one biased add (ties to even, as rintf),
//   instead of rint(RN(RN(v kHtNorm) / step) + 1/2): the two differ only for entries within
//   an ulp or two of a grid boundary.
// About 18 instructions an entry. H100, 4096 x 4096 bf16 with L2 flushed: 0.025 ms, against
// 0.035 for lowbit_quantize and 0.022 for a kernel that only reads x and writes a byte an entry
// (bench_lowbit_linear, docs/PERF.md).
// So a code differs from lowbit_quantize's only for entries that lie within ~1e-6 (relative to
// the step) of a boundary between two levels, and then by one level (tests/cuda:
// CudaLowbitQuantizeFast). Rows with an inf or NaN, or whose step is not a normal float, take the
// exact per-entry path (grid_level) on the scaled values.
//
// Kernel invariants (lowbit_quantize_fast_kernel)
// - A CTA of W = ceil(cols / 1024) warps (cols <= 32768) owns one row at a time: persistent, CTA c
//   takes rows c, c + G, c + 2 G, ... (G CTAs, as many as fit on the device at once), and
//   issues the loads of its next row before the transform of the current one, so memory stays
//   busy during the arithmetic and the barriers. Warp w holds the 128-blocks
//   8 w .. 8 w + 7; lane group g = lane / 4 holds block 8 w + g, lane hl = lane % 4 its entries
//   i = 8 (hl + 4 j) + e (j, e = 0..7 in registers: v[j][e]). So i's bits 0-2 are e, bits 3-4
//   the lane bits 0-1, bits 5-6 j; a load instruction (fixed j) reads 64 contiguous bytes per
//   lane group. Lane groups past the row's last block hold zeros (they add +0 to the sum, write
//   nothing), and shuffle only within their group.
// - A lane's 4 loads of a row are issued together (16 bytes each, raw bf16 in 16 registers until
//   the row's turn); the row stays in registers (32 floats a lane) from unpacking to store. Two
//   CTA barriers a row: the warps' partial sums (part[]), then the row's grid (shared_grid;
//   thread 0 computes it in double, as grid_from_rms does). Thread 0 reads part[] before the
//   second barrier and the warps write the next row's after it; they read shared_grid before the
//   next row's first barrier, after which thread 0 writes it again.
// - Codes: for a finite row, u = RN(RN(-v y - 1/2) + kRoundMagic) holds p = -q in the low 16 bits
//   of its bits (|v y| < 2^12 for any row: a scaled transformed entry is at most sqrt(cols) rms
//   <= 182 rms, and step = 2 ALPHA[b] rms / (2^b - 1) >= 0.056 rms);
//   pairs are clamped to [-qmax, -qmin] as s16x2 (sm_90: max/min.s16x2), four bytes of p packed
//   by PRMT, and the odd code 2q - 1 = ~(2p) byte by byte (two's complement: ~e = -e - 1), or
//   the offset code q - qmin = (~p ^ 2^(b-1)) & (2^b - 1) (offset_codes.h), whose row sum each
//   warp then adds to code_sums[r] (zeroed by thread 0 before the row's second barrier).
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

#include "core/error.h"
#include "ops/cuda/device_info.h"  // device_sm_count
#include "ops/cuda_ops.h"
#include "quant/alpha.h"
#include "quant/cuda/device_math.cuh"
#include "quant/cuda/ht_row_common.cuh"
#include "quant/cuda/lowbit_gemm.h"
#include "quant/cuda/vec_fwht.cuh"

namespace quest::cuda {
namespace {

using qdetail::DevGrid;
using qdetail::kFullMask;
using qdetail::kHtNorm;
using qdetail::kRoundMagic;

constexpr int kBlocksPerWarp = 8;  // 4 lanes a 128-block
constexpr int kMaxWarps = 32;
constexpr int64_t kMaxCols = int64_t(kMaxWarps) * kBlocksPerWarp * 128;

// The row's grid as the entries use it (shared memory, written by thread 0).
struct FastGrid {
  DevGrid g;        // grid_from_rms's (scale, step, qmin, qmax)
  float y;          // RN(kHtNorm / step): unscaled transform value -> grid units
  uint32_t lo, hi;  // s16x2 bounds of p = -q: (-qmax, -qmax), (-qmin, -qmin)
  int finite;       // the fast path applies (finite sum, normal step)
};

// Stage over lane bit m (h = 8 m): the lower side gets own + partner, the upper partner - own,
// each one rounded operation (the product by +-1 in the FMA is exact).
__device__ __forceinline__ void fwht_lane_stage(float (&v)[4][8], int lane, int m) {
  const float sgn = (lane & m) ? -1.0f : 1.0f;
#pragma unroll
  for (int j = 0; j < 4; ++j)
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      const float p = __shfl_xor_sync(kFullMask, v[j][e], m);
      v[j][e] = __fmaf_rn(sgn, v[j][e], p);
    }
}

// The CPU's fwht128 without the final scaling, in this file's layout (stage order 1 .. 64).
__device__ __forceinline__ void fwht128_unscaled(float (&v)[4][8], int lane) {
#pragma unroll
  for (int j = 0; j < 4; ++j) qdetail::fwht8_regs(v[j]);  // h = 1, 2, 4
  fwht_lane_stage(v, lane, 1);  // h = 8
  fwht_lane_stage(v, lane, 2);  // h = 16
#pragma unroll
  for (int e = 0; e < 8; ++e) {
    qdetail::butterfly(v[0][e], v[1][e]);  // h = 32
    qdetail::butterfly(v[2][e], v[3][e]);
    qdetail::butterfly(v[0][e], v[2][e]);  // h = 64
    qdetail::butterfly(v[1][e], v[3][e]);
  }
}

// Lane-wise clamp of an s16x2 word to [lo, hi] (max, then min): one instruction each on sm_90,
// the CUDA intrinsics (several each) before it.
__device__ __forceinline__ uint32_t clamp_s16x2(uint32_t a, uint32_t lo, uint32_t hi) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  uint32_t d;
  asm("{\n\t.reg .b32 t;\n\tmax.s16x2 t, %1, %2;\n\tmin.s16x2 %0, t, %3;\n\t}"
      : "=r"(d)
      : "r"(a), "r"(lo), "r"(hi));
  return d;
#else
  return __vmins2(__vmaxs2(a, lo), hi);
#endif
}

// p = -q in the low 16 bits of the result's bits (unclamped): see the invariants.
__device__ __forceinline__ uint32_t neg_level_bits(float v, float y) {
  return __float_as_uint(__fadd_rn(__fmaf_rn(-v, y, -0.5f), kRoundMagic));
}

// The byte masks of the offset codes of `bits`-bit levels: top = 2^(bits-1), low = 2^bits - 1 in
// every byte (codes4_fast); a kernel parameter, so read from the constant bank.
struct OffsetMasks {
  uint32_t top, low;
};

// The 4 codes of entries v[0..3] (a finite row), byte k = entry k: odd codes 2q - 1, or (kOffset)
// offset codes q - qmin.
template <bool kOffset>
__device__ __forceinline__ uint32_t codes4_fast(const float* v, const FastGrid& fg,
                                                OffsetMasks om) {
  uint32_t a = __byte_perm(neg_level_bits(v[0], fg.y), neg_level_bits(v[1], fg.y), 0x5410);
  uint32_t b = __byte_perm(neg_level_bits(v[2], fg.y), neg_level_bits(v[3], fg.y), 0x5410);
  a = clamp_s16x2(a, fg.lo, fg.hi);
  b = clamp_s16x2(b, fg.lo, fg.hi);
  const uint32_t p = __byte_perm(a, b, 0x6420);  // the low byte of each 16-bit p
  if constexpr (kOffset) {
    // ~p = q - 1 per byte, in [-2^(b-1), 2^(b-1) - 1] (two's complement, sign-extended to the
    // byte); q - qmin = (q - 1) + 2^(b-1) is its low b bits with the top one flipped (one LOP3,
    // no carries between bytes).
    return (~p ^ om.top) & om.low;
  } else {
    // 2q - 1 = ~(2p) per byte; bit 0 of each byte of (p << 1) is the lower byte's bit 7 or 0,
    // and ~ of it is discarded by the OR.
    return ~(p << 1) | 0x01010101u;
  }
}

// The same through grid_level on the scaled value (rows the fast arithmetic does not cover).
template <bool kOffset>
__device__ __forceinline__ uint32_t codes4_exact(const float* v, const DevGrid& g) {
  uint32_t w = 0;
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const int q = int(qdetail::grid_level(__fmul_rn(v[k], kHtNorm), g));
    const int code = kOffset ? q - int(g.qmin) : 2 * q - 1;
    w |= (uint32_t(code) & 0xffu) << (8 * k);
  }
  return w;
}

// The lane's 32 codes: 8 bytes at out + 32 j for chunk j. Returns their sum for offset codes
// (bytes 0 .. 127), else 0.
template <bool kOffset>
__device__ __forceinline__ int store_codes(const float (&v)[4][8], const FastGrid& fg,
                                           OffsetMasks om, int8_t* out) {
  int sum = 0;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    uint2 w;
    if (fg.finite) {
      w.x = codes4_fast<kOffset>(&v[j][0], fg, om);
      w.y = codes4_fast<kOffset>(&v[j][4], fg, om);
    } else {
      w.x = codes4_exact<kOffset>(&v[j][0], fg.g);
      w.y = codes4_exact<kOffset>(&v[j][4], fg.g);
    }
    *reinterpret_cast<uint2*>(out + 32 * j) = w;
    if constexpr (kOffset) sum = qdetail::code_sum8(w, sum);
  }
  return sum;
}

// Persistent: CTA c quantizes rows c, c + gridDim.x, ...; the next row's 4 loads a lane are
// issued before this row's transform, so they fly during its arithmetic and barriers.
// inv_n = kHtNorm^2 / cols (the unscaled transform's squares -> mean square, one multiply).
// kOffset: offset codes, and code_sums[r] = row r's sum of them: thread 0 zeroes it before the
// row's second barrier, after which each warp adds its part (one reduction a warp, no barrier).
template <int kThreads, int kMinBlocks, bool kOffset>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    lowbit_quantize_fast_kernel(const bf16* __restrict__ x, int8_t* __restrict__ codes,
                                float* __restrict__ step, int32_t* __restrict__ code_sums,
                                OffsetMasks om, int64_t rows, int cols, int bits, double alpha,
                                double inv_n) {
  __shared__ double part[kMaxWarps];
  __shared__ FastGrid shared_grid;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  const int nblk = cols >> 7, blk = warp * kBlocksPerWarp + (lane >> 2), hl = lane & 3;
  const bool live = blk < nblk;
  const int64_t offset = 128 * blk + 8 * hl;  // + 32 j, within the row
  const uint4 zero = make_uint4(0, 0, 0, 0);

  uint4 raw[4];
  auto load_row = [&](int64_t r) {
#pragma unroll
    for (int j = 0; j < 4; ++j)
      raw[j] = live ? *reinterpret_cast<const uint4*>(x + r * cols + offset + 32 * j) : zero;
  };
  int64_t r = blockIdx.x;
  if (r < rows) load_row(r);
  for (; r < rows; r += gridDim.x) {
    float v[4][8];
#pragma unroll
    for (int j = 0; j < 4; ++j) qdetail::unpack8(raw[j], v[j]);
    if (r + gridDim.x < rows) load_row(r + gridDim.x);
    fwht128_unscaled(v, lane);

    float s[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      s[j] = 0.0f;
#pragma unroll
      for (int e = 0; e < 8; ++e) s[j] = __fmaf_rn(v[j][e], v[j][e], s[j]);
    }
    const double lane_sum = double(__fadd_rn(__fadd_rn(s[0], s[1]), __fadd_rn(s[2], s[3])));
    const double warp_total = qdetail::warp_sum(lane_sum);
    if (lane == 0) part[warp] = warp_total;
    __syncthreads();
    if (threadIdx.x == 0) {  // reads part before the barrier below; the next row writes it after
      if (kOffset) code_sums[r] = 0;
      double total = 0.0;
      for (int w = 0; w < warps; ++w) total += part[w];
      FastGrid fg;
      fg.g = qdetail::grid_from_rms(bits, alpha, __dsqrt_rn(__dmul_rn(total, inv_n)));
      fg.finite = isfinite(total) && fg.g.step >= 0x1p-126f && fg.g.step < 0x1p100f;
      fg.y = __fdiv_rn(kHtNorm, fg.g.step);
      const uint32_t lo = uint32_t(-int(fg.g.qmax)) & 0xffffu;
      const uint32_t hi = uint32_t(-int(fg.g.qmin)) & 0xffffu;
      fg.lo = lo | (lo << 16), fg.hi = hi | (hi << 16);
      shared_grid = fg;
      if (step) step[r] = fg.g.step;
    }
    __syncthreads();  // every warp reads this row's grid before thread 0 writes the next one's
    const FastGrid fg = shared_grid;
    const int lane_codes = live ? store_codes<kOffset>(v, fg, om, codes + r * cols + offset) : 0;
    if constexpr (kOffset) {
      const int warp_sum = __reduce_add_sync(kFullMask, lane_codes);
      if (lane == 0 && warp_sum) atomicAdd(code_sums + r, warp_sum);
    }
  }
}

}  // namespace

bool lowbit_quantize_fast_supports(int64_t cols, const LowbitQuant& q) {
  return q.hadamard && lowbit_supported(LowbitRoute::kInt8, q.bits) && cols > 0 &&
         cols % 128 == 0 && cols <= kMaxCols;
}

void lowbit_quantize_fast(const bf16* x, int8_t* codes, float* step, int64_t rows, int64_t cols,
                          const LowbitQuant& q, cudaStream_t stream, int32_t* code_sums) {
  QUEST_QUANT_REQUIRE(q.hadamard, "lowbit_quantize_fast: the quantizer needs the Hadamard "
                                  "transform (hadamard-ste / -clip / -trust)");
  QUEST_QUANT_REQUIRE(lowbit_supported(LowbitRoute::kInt8, q.bits), "lowbit_quantize_fast: ",
                      q.bits, "-bit codes do not fit int8 (1..", kLowbitMaxBitsInt8, ")");
  QUEST_QUANT_REQUIRE(cols > 0 && cols % 128 == 0 && cols <= kMaxCols,
                      "lowbit_quantize_fast: rows of ", cols,
                      " entries (a positive multiple of 128 is needed, at most ", kMaxCols, ")");
  QUEST_QUANT_REQUIRE(rows >= 0 && rows <= int64_t(0x7fffffff), "lowbit_quantize_fast: ", rows,
                      " rows");
  QUEST_QUANT_REQUIRE(reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
                          reinterpret_cast<uintptr_t>(codes) % 16 == 0,
                      "lowbit_quantize_fast: x and codes must be 16-byte aligned");
  if (rows == 0) return;
  const int warps = int((cols / 128 + kBlocksPerWarp - 1) / kBlocksPerWarp);
  // Register budgets without spills at the occupancy each CTA size allows (64 registers spill a
  // few bytes; at 72-85 none do): W <= 4: 7 CTAs an SM, <= 8: 3, <= 12: 2, else 64 registers.
  // The offset codes' sums take 3 more registers: at 7 CTAs (72 registers) the 4-warp kernel
  // spilled 12 bytes; at 6 it does not.
  auto pick = [&]<bool kOffset>() {
    return warps <= 4    ? lowbit_quantize_fast_kernel<128, kOffset ? 6 : 7, kOffset>
           : warps <= 8  ? lowbit_quantize_fast_kernel<256, 3, kOffset>
           : warps <= 12 ? lowbit_quantize_fast_kernel<384, 2, kOffset>
                         : lowbit_quantize_fast_kernel<1024, 1, kOffset>;
  };
  auto kernel = code_sums ? pick.template operator()<true>() : pick.template operator()<false>();
  // The persistent grid: as many CTAs as fit at once (cached per device and CTA size: the
  // occupancy query costs host time on every call otherwise), each taking an equal share of rows.
  constexpr int kDeviceSlots = 16;
  static std::atomic<int> fit[kDeviceSlots][kMaxWarps + 1] = {};
  int dev = 0;
  QUEST_CUDA_CHECK(cudaGetDevice(&dev));
  std::atomic<int>& slot = fit[dev % kDeviceSlots][warps];
  int ctas = slot.load(std::memory_order_relaxed);
  if (ctas == 0) {
    int per_sm = 0;
    QUEST_CUDA_CHECK(
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, 32 * warps, 0));
    ctas = std::max(1, per_sm) * device_sm_count(dev);
    slot.store(ctas, std::memory_order_relaxed);
  }
  const int64_t per_cta = (rows + ctas - 1) / ctas;
  const int64_t grid = (rows + per_cta - 1) / per_cta;
  const double inv_n = double(kHtNorm) * double(kHtNorm) / double(cols);
  kernel<<<unsigned(grid), unsigned(32 * warps), 0, stream>>>(
      x, codes, step, code_sums,
      OffsetMasks{0x01010101u * (1u << (q.bits - 1)), 0x01010101u * ((1u << q.bits) - 1u)}, rows,
      int(cols), q.bits, kAlpha[q.bits], inv_n);
  QUEST_CUDA_CHECK(cudaGetLastError());
}

}  // namespace quest::cuda
