// The low-precision forward product (lowbit_gemm.h): the fused code quantizer, the cuBLASLt
// integer / FP8 products and the int32 scaling pass; on sm_90 the kInt8 route calls our own
// kernel instead (s8_gemm_sm90.cu).
//
// Kernel invariants
// - The int8 route with the transform runs the training quantizer's kernel (ht_row_kernel.cuh)
//   with codes and no values (kRowTeams); the two kernels below take the rest (kStagedRows).
// - All of them produce DeviceQuantizer's bits (lowbit_gemm.h); the test compares them.
// - lowbit_quantize_warp_kernel (cols <= 2048): 8 warps per CTA, warp w owns row 8 blockIdx.x + w
//   (its codes, mask words and step) and a cols-float slice of shared memory; it emulates the CTA
//   kernel's summation order (see the kernel).
// - lowbit_quantize_kernel (longer rows): grid = rows CTAs, one per row; blockDim.x =
//   row_kernel_threads(cols), the SAME count as row_quantize.cu's launch_family, because the
//   double sum of squares is taken in that kernel's order (thread t sums entries t, t + T,
//   t + 2T, ... then block_sum), which makes the step bitwise DeviceQuantizer's. The CTA owns
//   row r: codes[r, :], mask words [r * cols / 64, (r + 1) * cols / 64) and step[r]. Dynamic shared memory: the row, cols fp32.
//   cols % 128 == 0, x 16-byte aligned. Phase 1: 16-byte loads of the row into shared memory
//   (thread t takes vectors t, t + T, ...), then the transform: warp w takes 128-blocks
//   w, w + warps, ... in place (lane l holds entries 32k + l, fwht128_warp's layout). Phase 2: the
//   sum of squares and the grid. Phase 3 (codes): warp w takes 128-chunks
//   w, w + warps, ...; lane l quantizes entries 4l .. 4l + 3 of its chunk (one 16-byte shared
//   read, one 4-byte global write: a warp writes its 128 codes in one coalesced 128-byte store)
//   and the chunk's two mask words are assembled by OR-reductions over the warp (entry 4l + j is
//   bit 4 (l % 16) + j of word l / 16).
// - lowbit_scale_kernel: grid-stride over groups of 4 consecutive outputs of one row (M % 4 == 0):
//   one 16-byte int32 read and one 8-byte bf16 write per group. Its arithmetic is repeated in
//   s8_gemm_sm90.cu's epilogue (the kInt8 route on sm_90), which must give the same bits: change
//   both together.
#include <cublasLt.h>
#include <cuda_fp8.h>

#include <algorithm>
#include <memory>
#include <mutex>
#include <unordered_map>

#include "core/error.h"
#include "ops/cuda_ops.h"
#include "quant/alpha.h"
#include "quant/cuda/device_math.cuh"
#include "quant/cuda/kernels.h"
#include "quant/cuda/lowbit_gemm.h"
#include "quant/cuda/s8_gemm_sm90.h"

namespace quest::cuda {

using qdetail::DevGrid;
using qdetail::kFullMask;
using qdetail::kMaxRowThreads;
using qdetail::raise;

const char* lowbit_route_name(LowbitRoute route) {
  return route == LowbitRoute::kInt8 ? "int8 (IMMA, int32 + scale pass)"
                                     : "fp8 e4m3 (outer-vector scales, exact accumulation)";
}

LowbitQuant LowbitQuant::from_spec(const QuantSpec& spec) {
  QUEST_QUANT_REQUIRE(spec.kind == QuantKind::Ste || spec.kind == QuantKind::Clip ||
                          spec.kind == QuantKind::Trust,
                      "low-bit product: quantizer '", spec.to_string(),
                      "' has no integer codes (only ste, clip, trust and their hadamard- forms)");
  QUEST_QUANT_REQUIRE(spec.bits >= kMinBits && spec.bits <= kMaxBits, "low-bit product: bits ",
                      spec.bits, " out of range");
  const MaskRule m = spec.mask_rule();
  LowbitQuant q;
  q.bits = spec.bits;
  q.hadamard = spec.hadamard;
  q.rule = m.type == MaskRule::Type::None ? 0 : m.type == MaskRule::Type::Clip ? 1 : 2;
  q.factor = m.factor;
  return q;
}

namespace {

constexpr int64_t kMaxSharedBytes = 227 * 1024;

void check_offsets(const OffsetCodes& o, const char* what) {
  QUEST_QUANT_REQUIRE(offset_codes_valid(o) && reinterpret_cast<uintptr_t>(o.w_sums) % 16 == 0,
                      what, ": offset codes need both row sums (w_sums 16-byte aligned) and "
                      "widths of 1 to ", kOffsetMaxBits, " bits (got ", o.x_bits, ", ", o.w_bits,
                      ")");
}

// Rows up to this length go one per warp (lowbit_quantize_warp_kernel).
constexpr int64_t kWarpRowMaxCols = 2048;

struct QuantArgs {
  int64_t cols = 0;
  int row_threads = 0;  // row_kernel_threads(cols): fixes the order of the double row sum
  int bits = 0;
  double unit = 0.0;        // ALPHA[bits]
  int rule = 0;             // 0 none, 1 clip, 2 trust
  float clip_factor = 0.f;  // float(factor)
  double trust = 0.0;       // factor
  bool ht = false;
  uint64_t* mask = nullptr;
  float* step = nullptr;
};

template <bool kFp8>
__device__ __forceinline__ uint32_t code_byte(float code) {
  if constexpr (kFp8)
    return uint32_t(__nv_cvt_float_to_fp8(code, __NV_SATFINITE, __NV_E4M3));
  else
    return uint32_t(uint8_t(int8_t(__float2int_rn(code))));
}

// Codes (and the two mask words) of one 128-chunk by one warp: lane l quantizes entries
// 4l .. 4l + 3 (one 16-byte shared read, one 4-byte global write).
template <bool kFp8>
__device__ __forceinline__ void quantize_chunk(const float* chunk, uint8_t* out, uint64_t* mwords,
                                               const DevGrid& g, float inv, float limit, int rule,
                                               int lane) {
  const float4 v4 = reinterpret_cast<const float4*>(chunk)[lane];
  const float v[4] = {v4.x, v4.y, v4.z, v4.w};
  uint32_t packed = 0, nib = 0;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    // grid_quantize's q = clamp(rint(clamp(x) / step + 1/2)), without its IEEE division where
    // the result cannot depend on it: d = cl * (1/step) is within 2 ulp of cl / step (|d| <= 64,
    // so within 2^-16); rint(fl(d + 1/2)) only changes where d crosses an integer, so when d is
    // more than 2^-12 away from every integer both give the same q. Else: the exact division.
    const float cl = qdetail::clampf(v[j], -g.scale, g.scale);
    float d = __fmul_rn(cl, inv);
    if (fabsf(__fsub_rn(d, rintf(d))) < 0x1p-12f) d = __fdiv_rn(cl, g.step);
    const float q = qdetail::clampf(rintf(__fadd_rn(d, 0.5f)), g.qmin, g.qmax);
    packed |= code_byte<kFp8>(__fsub_rn(__fmul_rn(2.0f, q), 1.0f)) << (8 * j);  // exact
    if (mwords) {
      // xq and the mask test as grid_quantize and row_quantize.cu's quantize_one compute them.
      const float xq = __fsub_rn(__fmul_rn(q, g.step), __fmul_rn(0.5f, g.step));
      const float dev = rule == 1 ? fabsf(v[j]) : fabsf(__fsub_rn(xq, v[j]));
      if (!(dev <= limit)) nib |= 1u << j;
    }
  }
  reinterpret_cast<uint32_t*>(out)[lane] = packed;
  if (mwords) {  // uniform over the warp
    const uint32_t sh = nib << (4 * (lane & 7));
    const int part = lane >> 3;  // 0: word 0 low half, 1: its high half, 2, 3: word 1
    const uint32_t p0 = __reduce_or_sync(kFullMask, part == 0 ? sh : 0u);
    const uint32_t p1 = __reduce_or_sync(kFullMask, part == 1 ? sh : 0u);
    const uint32_t p2 = __reduce_or_sync(kFullMask, part == 2 ? sh : 0u);
    const uint32_t p3 = __reduce_or_sync(kFullMask, part == 3 ? sh : 0u);
    if (lane == 0) {
      mwords[0] = (uint64_t(p1) << 32) | p0;
      mwords[1] = (uint64_t(p3) << 32) | p2;
    }
  }
}

template <class TIn, bool kFp8>
__global__ void __launch_bounds__(kMaxRowThreads)
    lowbit_quantize_kernel(const TIn* __restrict__ x, uint8_t* __restrict__ codes, QuantArgs a) {
  extern __shared__ float4 smem4[];  // float4: 16-byte aligned rows for phase 3's reads
  float* row = reinterpret_cast<float*>(smem4);
  __shared__ double red[32];
  __shared__ DevGrid grid_s;
  __shared__ float limit_s, inv_s;
  const int64_t r = blockIdx.x, cols = a.cols, nblk = cols / 128;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, warps = blockDim.x >> 5;
  const TIn* xr = x + r * cols;

  // Phase 1: the row into shared memory with 16-byte loads (all of a thread's loads are
  // independent, so they are in flight together), then the transform of each 128-block by one
  // warp in place (fwht128_warp's layout). Conversion to fp32 is exact, so the bits are those of
  // row_quantize.cu's element-wise staging.
  constexpr int kVec = 16 / int(sizeof(TIn));  // entries per 16-byte load
  const int64_t nvec = cols / kVec;
  const uint4* xv = reinterpret_cast<const uint4*>(xr);
#pragma unroll 4
  for (int64_t i = tid; i < nvec; i += blockDim.x) {
    const uint4 u = __ldg(xv + i);
    float f[8];
    if constexpr (sizeof(TIn) == 2) {
      const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&u);
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const float2 p = __bfloat1622float2(h[k]);
        f[2 * k] = p.x, f[2 * k + 1] = p.y;
      }
      float4* dst = reinterpret_cast<float4*>(row + i * 8);
      dst[0] = make_float4(f[0], f[1], f[2], f[3]);
      dst[1] = make_float4(f[4], f[5], f[6], f[7]);
    } else {
      reinterpret_cast<uint4*>(row)[i] = u;  // fp32: stored as is
    }
  }
  __syncthreads();
  if (a.ht) {
    for (int64_t b = warp; b < nblk; b += warps) qdetail::fwht128_warp_inplace(row + b * 128, lane);
    __syncthreads();
  }

  // Phase 2: the row's grid (row_quantize.cu's order and operations).
  double ss = 0.0;
  for (int64_t i = tid; i < cols; i += blockDim.x) {
    const double v = row[i];
    ss += v * v;  // exact product: contraction cannot change it
  }
  ss = qdetail::block_sum(ss, red);
  if (tid == 0) {
    const double rms = qdetail::rms_from_sum(ss, cols);
    const DevGrid g = qdetail::grid_from_rms(a.bits, a.unit, rms);
    grid_s = g;
    inv_s = __frcp_rn(g.step);
    limit_s = a.rule == 1 ? __fmul_rn(a.clip_factor, g.scale)
                          : __double2float_rn(__dmul_rn(a.trust, rms));
    if (a.step) a.step[r] = g.step;
  }
  __syncthreads();
  const DevGrid g = grid_s;
  const float limit = limit_s, inv = inv_s;

  // Phase 3: codes (and mask words), one 128-chunk per warp iteration.
  uint64_t* mrow = (a.mask && a.rule != 0) ? a.mask + r * (cols / 64) : nullptr;
  uint8_t* crow = codes + r * cols;
  for (int64_t c = warp; c < nblk; c += warps)
    quantize_chunk<kFp8>(row + c * 128, crow + c * 128, mrow ? mrow + 2 * c : nullptr, g, inv,
                         limit, a.rule, lane);
}

// One row per warp for short rows (cols <= kWarpRowMaxCols): 8 rows per CTA, no CTA barriers, so
// many rows are in flight per SM (the CTA-per-row kernel is bound by its barrier chain there).
// The sum of squares emulates the CTA kernel's order exactly: virtual thread t = 32 j + lane of
// T = row_kernel_threads(cols) sums entries t, t + T, ... (j = the virtual warp, held in s[j]), each
// virtual warp is reduced by warp_sum's butterfly, and the virtual warps are added to 0.0 in
// order (block_sum). Shared memory: 8 rows of cols fp32, warp w owns row w.
template <class TIn, bool kFp8>
__global__ void __launch_bounds__(256)
    lowbit_quantize_warp_kernel(const TIn* __restrict__ x, uint8_t* __restrict__ codes,
                                int64_t rows, QuantArgs a) {
  extern __shared__ float4 smem4[];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t r = int64_t(blockIdx.x) * 8 + warp, cols = a.cols, nblk = cols / 128;
  if (r >= rows) return;  // whole warps
  float* row = reinterpret_cast<float*>(smem4) + warp * cols;
  const TIn* xr = x + r * cols;

  constexpr int kVec = 16 / int(sizeof(TIn));
  const int64_t nvec = cols / kVec;
  const uint4* xv = reinterpret_cast<const uint4*>(xr);
#pragma unroll 4
  for (int64_t i = lane; i < nvec; i += 32) {
    const uint4 u = __ldg(xv + i);
    if constexpr (sizeof(TIn) == 2) {
      const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&u);
      float4* dst = reinterpret_cast<float4*>(row + i * 8);
      const float2 p0 = __bfloat1622float2(h[0]), p1 = __bfloat1622float2(h[1]);
      const float2 p2 = __bfloat1622float2(h[2]), p3 = __bfloat1622float2(h[3]);
      dst[0] = make_float4(p0.x, p0.y, p1.x, p1.y);
      dst[1] = make_float4(p2.x, p2.y, p3.x, p3.y);
    } else {
      reinterpret_cast<uint4*>(row)[i] = u;
    }
  }
  __syncwarp();
  if (a.ht) {
    for (int64_t b = 0; b < nblk; ++b) qdetail::fwht128_warp_inplace(row + b * 128, lane);
    __syncwarp();
  }

  const int T = a.row_threads, vwarps = T / 32;
  double s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (int64_t base = 0; base < cols; base += T) {
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const int64_t i = base + 32 * j + lane;
      if (j < vwarps && i < cols) {
        const double v = row[i];
        s[j] += v * v;
      }
    }
  }
  double ss = 0.0;
#pragma unroll
  for (int j = 0; j < 8; ++j)
    if (j < vwarps) ss += qdetail::warp_sum(s[j]);  // every lane: the same value, same order
  const double rms = qdetail::rms_from_sum(ss, cols);
  const DevGrid g = qdetail::grid_from_rms(a.bits, a.unit, rms);
  const float inv = __frcp_rn(g.step);
  const float limit = a.rule == 1 ? __fmul_rn(a.clip_factor, g.scale)
                                  : __double2float_rn(__dmul_rn(a.trust, rms));
  if (lane == 0 && a.step) a.step[r] = g.step;
  uint64_t* mrow = (a.mask && a.rule != 0) ? a.mask + r * (cols / 64) : nullptr;
  uint8_t* crow = codes + r * cols;
  for (int64_t c = 0; c < nblk; ++c)
    quantize_chunk<kFp8>(row + c * 128, crow + c * 128, mrow ? mrow + 2 * c : nullptr, g, inv,
                         limit, a.rule, lane);
}

// kRowTeams: the training quantizer's kernel with codes and no values (same bits, fewer
// instructions an entry: the row stays in registers). False where it does not apply.
// Offset codes (code_sums) are only written here.
template <class TIn>
bool launch_row_teams(const TIn* x, void* codes, float* step, uint64_t* mask, int64_t rows,
                      int64_t cols, const LowbitQuant& q, LowbitRoute route, cudaStream_t stream,
                      LowbitQuantKernel kernel, int32_t* code_sums) {
  if (route != LowbitRoute::kInt8 || !q.hadamard) return false;
  // Past 96 blocks (8 vectors a lane, 16 warps an SM) the staged kernel is faster (0.150
  // against 0.234 ms at 4096 x 11008 with 8 vectors, H100, 2026-11-24); up to 96 (6 vectors,
  // 24 warps an SM) the row teams are: 0.094 against 0.155 ms at 4096 x 11008.
  if (kernel == LowbitQuantKernel::kAuto && cols > 96 * 128 && !code_sums) return false;
  qdetail::RowQuantArgs a;
  a.rows = rows, a.cols = cols, a.bits = q.bits, a.unit = kAlpha[q.bits], a.rule = q.rule;
  a.clip_factor = float(q.factor), a.trust = q.factor;
  a.ht_in = true, a.ht_out = false;
  a.mask = mask, a.step = step, a.codes = static_cast<int8_t*>(codes), a.code_sums = code_sums;
  return qdetail::launch_ht_grid_rows(x, static_cast<bf16*>(nullptr), a, stream);
}

template <class TIn>
void launch_quantize(const TIn* x, void* codes, float* step, uint64_t* mask, int64_t rows,
                     int64_t cols, const LowbitQuant& q, LowbitRoute route, cudaStream_t stream,
                     LowbitQuantKernel kernel, int32_t* code_sums) {
  QUEST_QUANT_REQUIRE(rows >= 0 && rows <= int64_t(0x7fffffff), "low-bit quantizer: ", rows,
                      " rows");
  QUEST_QUANT_REQUIRE(cols > 0 && cols % 128 == 0 &&
                          cols * int64_t(sizeof(float)) <= kMaxSharedBytes - 1024,
                      "low-bit quantizer: rows of ", cols,
                      " entries (a positive multiple of 128 is needed, at most ",
                      (kMaxSharedBytes - 1024) / 4, ")");
  QUEST_QUANT_REQUIRE(lowbit_supported(route, q.bits), "low-bit quantizer: ", q.bits,
                      "-bit codes do not fit the ", lowbit_route_name(route), " route");
  QUEST_QUANT_REQUIRE(q.rule >= 0 && q.rule <= 2, "low-bit quantizer: bad mask rule ", q.rule);
  QUEST_QUANT_REQUIRE(reinterpret_cast<uintptr_t>(codes) % 16 == 0 &&
                          reinterpret_cast<uintptr_t>(x) % 16 == 0,
                      "low-bit quantizer: x and codes must be 16-byte aligned");
  QUEST_QUANT_REQUIRE(!code_sums || kernel != LowbitQuantKernel::kStagedRows,
                      "low-bit quantizer: offset codes (code sums) come from the row-team kernel");
  if (rows == 0) return;
  if (kernel != LowbitQuantKernel::kStagedRows) {
    const bool done =
        launch_row_teams(x, codes, step, mask, rows, cols, q, route, stream, kernel, code_sums);
    QUEST_QUANT_REQUIRE(done || (kernel == LowbitQuantKernel::kAuto && !code_sums),
                        "low-bit quantizer: the row-team kernel takes the int8 route with the "
                        "transform and rows of at most 16384 entries (and is the only one that "
                        "writes offset codes)");
    if (done) return;
  }
  QuantArgs a;
  a.cols = cols, a.row_threads = qdetail::row_kernel_threads(cols);
  a.bits = q.bits, a.unit = kAlpha[q.bits], a.rule = q.rule;
  a.clip_factor = float(q.factor), a.trust = q.factor, a.ht = q.hadamard;
  a.mask = mask, a.step = step;
  const size_t smem = size_t(cols) * sizeof(float);
  if (cols <= kWarpRowMaxCols) {
    const size_t wsmem = 8 * smem;
    auto launch = [&](auto kernel) {
      if (wsmem > 48 * 1024)
        QUEST_CUDA_CHECK(
            cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(wsmem)));
      kernel<<<unsigned((rows + 7) / 8), 256, wsmem, stream>>>(x, static_cast<uint8_t*>(codes),
                                                               rows, a);
    };
    if (route == LowbitRoute::kFp8)
      launch(lowbit_quantize_warp_kernel<TIn, true>);
    else
      launch(lowbit_quantize_warp_kernel<TIn, false>);
  } else {
    auto launch = [&](auto kernel) {
      if (smem > 48 * 1024)
        QUEST_CUDA_CHECK(
            cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
      kernel<<<unsigned(rows), a.row_threads, smem, stream>>>(x, static_cast<uint8_t*>(codes), a);
    };
    if (route == LowbitRoute::kFp8)
      launch(lowbit_quantize_kernel<TIn, true>);
    else
      launch(lowbit_quantize_kernel<TIn, false>);
  }
  QUEST_CUDA_CHECK(cudaGetLastError());
}

// off.x_sums null: acc holds the sums of signed codes; else of offset codes (offset_codes.h),
// corrected first. K: the codes' row length.
__global__ void lowbit_scale_kernel(bf16* __restrict__ y, const int32_t* __restrict__ acc,
                                    const float* __restrict__ sx, const float* __restrict__ sw,
                                    int64_t N, int64_t M, OffsetCodes off, uint32_t K) {
  const int64_t groups = N * (M / 4), gpr = M / 4;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < groups;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t n = i / gpr, m = (i - n * gpr) * 4;
    int4 a = reinterpret_cast<const int4*>(acc)[i];
    if (off.x_sums) {
      const uint32_t zx = offset_zero(off.x_bits), zw = offset_zero(off.w_bits);
      const uint32_t t = offset_row_term(off.x_sums[n], K, zx, zw);
      const int4 u = *reinterpret_cast<const int4*>(off.w_sums + m);
      a = int4{offset_sum(a.x, t + offset_col_term(u.x, zx)),
               offset_sum(a.y, t + offset_col_term(u.y, zx)),
               offset_sum(a.z, t + offset_col_term(u.z, zx)),
               offset_sum(a.w, t + offset_col_term(u.w, zx))};
    }
    const float4 w = *reinterpret_cast<const float4*>(sw + m);
    const float s = __fmul_rn(0.25f, sx[n]);
    const __nv_bfloat162 lo = __floats2bfloat162_rn(__fmul_rn(__fmul_rn(float(a.x), s), w.x),
                                                    __fmul_rn(__fmul_rn(float(a.y), s), w.y));
    const __nv_bfloat162 hi = __floats2bfloat162_rn(__fmul_rn(__fmul_rn(float(a.z), s), w.z),
                                                    __fmul_rn(__fmul_rn(float(a.w), s), w.w));
    __nv_bfloat162* out = reinterpret_cast<__nv_bfloat162*>(y + n * M + m);
    out[0] = lo;
    out[1] = hi;
  }
}

// ---- cuBLASLt plans ------------------------------------------------------------------------
// Row-major to column-major as in ops/cuda/blas.cu: y[N,M] = x[N,K] . w[M,K]^T is
// y^T[M,N] = op_T(w_cm[K,M]) . x_cm[K,N], the "TN" layout both IMMA and FP8 kernels require.
// A = w (rows of D: the A scale vector has M entries), B = x (N entries).
void lt_check(cublasStatus_t status, const char* what) {
  if (status != CUBLAS_STATUS_SUCCESS)
    raise("cuBLASLt error ", int(status), " (", cublasLtGetStatusString(status), ") from ", what);
}
#define LB_LT_CHECK(call) lt_check((call), #call)

enum class Kind : int { kInt8Sums, kFp8Bf16, kFp8F32 };

struct Key {
  Kind kind;
  int64_t N, K, M;
  uint32_t align_a, align_b, align_d;
  bool operator==(const Key&) const = default;
};
struct KeyHash {
  size_t operator()(const Key& k) const {
    size_t h = size_t(k.kind);
    for (const uint64_t v : {uint64_t(k.N), uint64_t(k.K), uint64_t(k.M), uint64_t(k.align_a),
                             uint64_t(k.align_b), uint64_t(k.align_d)})
      h = h * 1000003u ^ std::hash<uint64_t>{}(v);
    return h;
  }
};

struct Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulAlgo_t algo{};
  cublasLtMatmulAlgo_t candidates[8] = {};  // the heuristic's list (autotuning)
  int n_candidates = 0;
  bool tuned = false;
};

void destroy(Plan& p) {
  if (p.a) cublasLtMatrixLayoutDestroy(p.a);
  if (p.b) cublasLtMatrixLayoutDestroy(p.b);
  if (p.d) cublasLtMatrixLayoutDestroy(p.d);
  if (p.op) cublasLtMatmulDescDestroy(p.op);
  p = Plan{};
}

struct Impl {
  cublasLtHandle_t lt = nullptr;
  std::mutex mutex;
  std::unordered_map<Key, Plan, KeyHash> plans;
  bool autotune = false;
  Int8Kernel int8_kernel = Int8Kernel::kAuto;
};

uint32_t alignment(const void* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  uint32_t al = 256;
  while (al > 1 && a % al) al >>= 1;
  return al;
}

const char* kind_name(Kind k) {
  return k == Kind::kInt8Sums ? "int8 sums" : k == Kind::kFp8Bf16 ? "fp8 -> bf16" : "fp8 -> fp32";
}

// FP8 with outer-vector scales: the heuristic of cuBLASLt 13.1 answers INVALID_VALUE unless the
// scale pointers are already set (seen on the H100), so the plan is made with the call's pointers.
Plan make_plan(cublasLtHandle_t lt, const Key& key, size_t workspace_bytes, const float* a_scale,
               const float* b_scale) {
  const uint64_t N = uint64_t(key.N), K = uint64_t(key.K), M = uint64_t(key.M);
  const bool fp8 = key.kind != Kind::kInt8Sums;
  Plan p;
  try {
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    if (fp8) {
      LB_LT_CHECK(cublasLtMatmulDescCreate(&p.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
      const int8_t fast = 0;  // full-precision accumulation (the exactness requirement)
      LB_LT_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_FAST_ACCUM, &fast,
                                                 sizeof(fast)));
      const int32_t mode = CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F;
      LB_LT_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &mode,
                                                 sizeof(mode)));
      LB_LT_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &mode,
                                                 sizeof(mode)));
      LB_LT_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER,
                                                 &a_scale, sizeof(a_scale)));
      LB_LT_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER,
                                                 &b_scale, sizeof(b_scale)));
    } else {
      LB_LT_CHECK(cublasLtMatmulDescCreate(&p.op, CUBLAS_COMPUTE_32I, CUDA_R_32I));
    }
    LB_LT_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
    LB_LT_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
    const cudaDataType_t in = fp8 ? CUDA_R_8F_E4M3 : CUDA_R_8I;
    const cudaDataType_t out = key.kind == Kind::kInt8Sums  ? CUDA_R_32I
                               : key.kind == Kind::kFp8Bf16 ? CUDA_R_16BF
                                                            : CUDA_R_32F;
    LB_LT_CHECK(cublasLtMatrixLayoutCreate(&p.a, in, K, M, int64_t(K)));
    LB_LT_CHECK(cublasLtMatrixLayoutCreate(&p.b, in, K, N, int64_t(K)));
    LB_LT_CHECK(cublasLtMatrixLayoutCreate(&p.d, out, M, N, int64_t(M)));

    cublasLtMatmulPreference_t pref = nullptr;
    LB_LT_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    const uint64_t ws = workspace_bytes;
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                         sizeof(ws));
    const uint32_t aligns[4] = {key.align_a, key.align_b, key.align_d, key.align_d};
    const cublasLtMatmulPreferenceAttributes_t attrs[4] = {
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
    for (int i = 0; i < 4; ++i)
      cublasLtMatmulPreferenceSetAttribute(pref, attrs[i], &aligns[i], sizeof(uint32_t));
    cublasLtMatmulHeuristicResult_t results[8] = {};
    int returned = 0;
    const cublasStatus_t st =
        cublasLtMatmulAlgoGetHeuristic(lt, p.op, p.a, p.b, p.d, p.d, pref, 8, results, &returned);
    cublasLtMatmulPreferenceDestroy(pref);
    for (int i = 0; i < returned; ++i)
      if (results[i].state == CUBLAS_STATUS_SUCCESS) p.candidates[p.n_candidates++] = results[i].algo;
    if (st != CUBLAS_STATUS_SUCCESS || p.n_candidates == 0)
      raise("low-bit product: no cuBLASLt algorithm for ", kind_name(key.kind), " N=", key.N,
            " K=", key.K, " M=", key.M, " (alignments ", key.align_a, "/", key.align_b, "/",
            key.align_d, " bytes, status ", int(st), ")");
    p.algo = p.candidates[0];
  } catch (...) {
    destroy(p);
    throw;
  }
  return p;
}

}  // namespace

// ---- public API ------------------------------------------------------------------------------
void lowbit_quantize(const bf16* x, void* codes, float* step, uint64_t* mask, int64_t rows,
                     int64_t cols, const LowbitQuant& q, LowbitRoute route, cudaStream_t stream,
                     LowbitQuantKernel kernel, int32_t* code_sums) {
  launch_quantize(x, codes, step, mask, rows, cols, q, route, stream, kernel, code_sums);
}
void lowbit_quantize(const float* x, void* codes, float* step, uint64_t* mask, int64_t rows,
                     int64_t cols, const LowbitQuant& q, LowbitRoute route, cudaStream_t stream,
                     LowbitQuantKernel kernel, int32_t* code_sums) {
  launch_quantize(x, codes, step, mask, rows, cols, q, route, stream, kernel, code_sums);
}

void lowbit_scale_int32(bf16* y, const int32_t* acc, const float* sx, const float* sw, int64_t N,
                        int64_t M, cudaStream_t stream, const OffsetCodes* offsets, int64_t K) {
  QUEST_QUANT_REQUIRE(N >= 0 && M >= 0 && M % 4 == 0, "low-bit scale pass: M = ", M,
                      " must be a multiple of 4");
  if (offsets) check_offsets(*offsets, "low-bit scale pass");
  const int64_t groups = N * (M / 4);
  if (groups == 0) return;
  int64_t blocks = (groups + 255) / 256;
  blocks = std::min<int64_t>(blocks, 132 * 16);
  lowbit_scale_kernel<<<unsigned(blocks), 256, 0, stream>>>(
      y, acc, sx, sw, N, M, offsets ? *offsets : OffsetCodes{}, uint32_t(K));
  QUEST_CUDA_CHECK(cudaGetLastError());
}

LowbitGemm::LowbitGemm(size_t int32_scratch_bytes, size_t workspace_bytes)
    : workspace_bytes_(workspace_bytes), scratch_bytes_(int32_scratch_bytes) {
  auto impl = std::make_unique<Impl>();
  LB_LT_CHECK(cublasLtCreate(&impl->lt));
  try {
    workspace_ = qdetail::device_alloc<uint8_t>(int64_t(workspace_bytes_));
    scratch_ = qdetail::device_alloc<int32_t>(int64_t(scratch_bytes_ / sizeof(int32_t)));
  } catch (...) {
    cudaFree(workspace_);
    cublasLtDestroy(impl->lt);
    throw;
  }
  impl_ = impl.release();
}

LowbitGemm::~LowbitGemm() {
  auto* impl = static_cast<Impl*>(impl_);
  if (impl) {
    for (auto& [key, p] : impl->plans) destroy(p);
    cublasLtDestroy(impl->lt);
    delete impl;
  }
  cudaFree(workspace_);
  cudaFree(scratch_);
}

void LowbitGemm::set_autotune(bool on) { static_cast<Impl*>(impl_)->autotune = on; }
void LowbitGemm::set_int8_kernel(Int8Kernel k) { static_cast<Impl*>(impl_)->int8_kernel = k; }
Int8Kernel LowbitGemm::int8_kernel() const { return static_cast<const Impl*>(impl_)->int8_kernel; }

namespace {

void check_shape(const char* what, int64_t N, int64_t K, int64_t M) {
  QUEST_QUANT_REQUIRE(N >= 0 && M >= 0 && K > 0 && K % 16 == 0 && M % 4 == 0, "low-bit ", what,
                      ": shape N=", N, " K=", K, " M=", M,
                      " (K must be a positive multiple of 16, M a multiple of 4)");
  QUEST_QUANT_REQUIRE(K <= 133000, "low-bit ", what, ": K = ", K,
                      " could overflow the int32 sums of 7-bit codes");
}

// D = A . B for `key` with its plan; scale pointers (FP8) set on the plan's descriptor first.
void run(Impl& impl, void* workspace, size_t workspace_bytes, const Key& key, const void* A,
         const void* B, void* D, const float* a_scale, const float* b_scale, float alpha_f,
         cudaStream_t stream) {
  std::lock_guard lock(impl.mutex);
  auto it = impl.plans.find(key);
  if (it == impl.plans.end())
    it = impl.plans.emplace(key, make_plan(impl.lt, key, workspace_bytes, a_scale, b_scale)).first;
  Plan& plan = it->second;
  if (key.kind != Kind::kInt8Sums) {
    LB_LT_CHECK(cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER,
                                               &a_scale, sizeof(a_scale)));
    LB_LT_CHECK(cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER,
                                               &b_scale, sizeof(b_scale)));
  }
  const int32_t alpha_i = 1, beta_i = 0;
  const float beta_f = 0.0f;
  const void* alpha = key.kind == Kind::kInt8Sums ? static_cast<const void*>(&alpha_i) : &alpha_f;
  const void* beta = key.kind == Kind::kInt8Sums ? static_cast<const void*>(&beta_i) : &beta_f;
  auto launch = [&](const cublasLtMatmulAlgo_t& algo) {
    return cublasLtMatmul(impl.lt, plan.op, alpha, A, plan.a, B, plan.b, beta, D, plan.d, D,
                          plan.d, &algo, workspace, workspace_bytes, stream);
  };
  if (impl.autotune && !plan.tuned && plan.n_candidates > 1) {
    // Time each candidate (3 runs after 1 warm-up) on the real operands; keep the fastest. D is
    // overwritten by the real call below.
    cudaEvent_t e0, e1;
    QUEST_CUDA_CHECK(cudaEventCreate(&e0));
    QUEST_CUDA_CHECK(cudaEventCreate(&e1));
    float best = 1e30f;
    for (int c = 0; c < plan.n_candidates; ++c) {
      const cublasLtMatmulAlgo_t algo = plan.candidates[c];
      if (launch(algo) != CUBLAS_STATUS_SUCCESS) continue;
      QUEST_CUDA_CHECK(cudaEventRecord(e0, stream));
      for (int i = 0; i < 3; ++i) launch(algo);
      QUEST_CUDA_CHECK(cudaEventRecord(e1, stream));
      QUEST_CUDA_CHECK(cudaEventSynchronize(e1));
      float ms = 0.f;
      QUEST_CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
      if (ms < best) best = ms, plan.algo = algo;
    }
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
  }
  plan.tuned = true;
  LB_LT_CHECK(launch(plan.algo));
}

}  // namespace

void LowbitGemm::forward(bf16* y, const void* xc, const float* sx, const void* wc, const float* sw,
                         int64_t N, int64_t K, int64_t M, LowbitRoute route, cudaStream_t stream,
                         const OffsetCodes* offsets) {
  check_shape("product", N, K, M);
  QUEST_QUANT_REQUIRE(!offsets || route == LowbitRoute::kInt8,
                      "low-bit product: offset codes belong to the int8 route");
  if (offsets) check_offsets(*offsets, "low-bit product");
  if (N == 0 || M == 0) return;
  auto& impl = *static_cast<Impl*>(impl_);
  if (route == LowbitRoute::kFp8) {
    // 0.25 * (sw[m] * sx[n]) * sum: the two halves of the steps as one exact power of two.
    const Key key{Kind::kFp8Bf16, N, K, M, alignment(wc), alignment(xc), alignment(y)};
    run(impl, workspace_, workspace_bytes_, key, wc, xc, y, sw, sx, 0.25f, stream);
    return;
  }
  const auto* xs8 = static_cast<const int8_t*>(xc);
  const auto* ws8 = static_cast<const int8_t*>(wc);
  // Our sm_90a kernel (scales in its epilogue, the same bits) where it runs; forced, it throws
  // where it cannot.
  if (impl.int8_kernel == Int8Kernel::kSm90 ||
      (impl.int8_kernel == Int8Kernel::kAuto && s8_gemm_sm90_available() &&
       s8_gemm_sm90_supports(y, xs8, sx, ws8, sw, N, K, M))) {
    s8_gemm_sm90(y, xs8, sx, ws8, sw, N, K, M, stream, S8Sm90Tile::kAuto, 0, offsets);
    return;
  }
  int64_t chunk = int64_t(scratch_bytes_ / (sizeof(int32_t) * size_t(M)));
  chunk = chunk >= N ? N : (chunk / 16) * 16;
  QUEST_QUANT_REQUIRE(chunk >= 16 || chunk == N, "low-bit product: the int32 scratch (",
                      scratch_bytes_, " bytes) holds fewer than 16 rows of M = ", M);
  const auto* x8 = static_cast<const int8_t*>(xc);
  for (int64_t n0 = 0; n0 < N; n0 += chunk) {
    const int64_t rows = std::min(chunk, N - n0);
    const int8_t* xs = x8 + n0 * K;
    const Key key{Kind::kInt8Sums, rows, K, M, alignment(wc), alignment(xs), alignment(scratch_)};
    run(impl, workspace_, workspace_bytes_, key, wc, xs, scratch_, nullptr, nullptr, 1.0f, stream);
    OffsetCodes chunk_offsets;
    if (offsets) chunk_offsets = *offsets, chunk_offsets.x_sums += n0;
    lowbit_scale_int32(y + n0 * M, scratch_, sx + n0, sw, rows, M, stream,
                       offsets ? &chunk_offsets : nullptr, K);
  }
}

void LowbitGemm::int8_sums(int32_t* acc, const int8_t* xc, const int8_t* wc, int64_t N, int64_t K,
                           int64_t M, cudaStream_t stream) {
  check_shape("int8 sums", N, K, M);
  if (N == 0 || M == 0) return;
  const Key key{Kind::kInt8Sums, N, K, M, alignment(wc), alignment(xc), alignment(acc)};
  run(*static_cast<Impl*>(impl_), workspace_, workspace_bytes_, key, wc, xc, acc, nullptr, nullptr,
      1.0f, stream);
}

void LowbitGemm::fp8_sums(float* acc, const void* xc, const float* sx, const void* wc,
                          const float* sw, int64_t N, int64_t K, int64_t M, cudaStream_t stream) {
  check_shape("fp8 sums", N, K, M);
  if (N == 0 || M == 0) return;
  const Key key{Kind::kFp8F32, N, K, M, alignment(wc), alignment(xc), alignment(acc)};
  run(*static_cast<Impl*>(impl_), workspace_, workspace_bytes_, key, wc, xc, acc, sw, sx, 1.0f,
      stream);
}

}  // namespace quest::cuda
