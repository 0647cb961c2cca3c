#pragma once
// The low-precision forward product of a quantized linear layer (issue 9 item 1; QUEST_SPEC.md
// sections 3 and 8), as a standalone piece: integer codes instead of dequantized bf16 values.
//
// A grid quantizer (ste / clip / trust, with or without the Hadamard transform) maps entry k of row
// r to xq = (q - 1/2) * step[r] with q an integer in [1 - 2^(b-1), 2^(b-1)]. The odd integer
// c = 2q - 1 in [-(2^b - 1), 2^b - 1] is the stored code, so for x [N, K] and w [M, K]
//     y[n, m] = (step_x[n] / 2) * (step_w[m] / 2) * sum_k cx[n, k] * cw[m, k]
// where the sum is an exact integer (|sum| <= K * (2^b - 1)^2 < 2^31 for b <= 7, K < 133,000).
//
// Two steps:
//  1. lowbit_quantize: one fused pass per operand (Hadamard transform of the 128-blocks, row RMS,
//     grid, codes, per-row step, optionally the gradient mask). On the same input it produces
//     bit for bit the steps and masks of DeviceQuantizer::forward (same spec, Half form), and codes
//     whose dequantized values are bit for bit that forward's xq (the test checks all three).
//  2. LowbitGemm::forward: the integer product with both row scales applied, bf16 out.
//
// Routes (LowbitRoute):
//  - kInt8 (bits 1..7): int8 codes, tensor cores with int32 accumulation (exact). Two kernels give
//    the same bits (Int8Kernel):
//    * kSm90, taken by default on sm_90 devices (H100/H200) when the shape allows it (K % 16 == 0,
//      M % 8 == 0, 16-byte aligned codes and output; s8_gemm_sm90.h): our own wgmma + TMA GEMM
//      with both row scales applied to the int32 accumulators in its epilogue, bf16 out; no
//      scratch, no chunking, no second pass.
//    * kCublasLt, elsewhere: cuBLASLt IMMA, int32 into a scratch buffer owned by LowbitGemm, then
//      one scaling kernel -> bf16. The int32 round trip is this kernel's overhead; the product is
//      done in row chunks so that scratch stays bounded.
//    Both scale as lowbit_scale_int32 does (float(acc) * (0.25 sx[n]), then * sw[m], each rounded
//    to nearest fp32, then to bf16), so the outputs are bitwise equal (test_cuda_s8_gemm.cu).
//  - kFp8 (bits 1..3): the same odd codes stored as fp8 e4m3, FP8 tensor cores with cuBLASLt's
//    per-row ("outer vector") fp32 scales applied in its epilogue and bf16 written directly; fast
//    accumulation OFF. e4m3 holds 4-bit codes exactly (|c| <= 15), but on the H100 (cuBLASLt
//    13.1) the FP8 tensor cores still drop low bits of large partial sums: 4-bit codes all +15
//    over K = 11008 sum to 2,474,050 instead of 2,476,800. 1..3-bit codes pass every worst case
//    (tests/cuda/test_cuda_lowbit_gemm.cu, CudaLowbitFp8WorstCase), so the route stops at 3 bits;
//    4-bit codes take kInt8.
//  - 8-bit codes (up to +-255) fit neither: lowbit_supported(route, 8) is false and the caller
//    keeps the bf16 product of the dequantized operands (DeviceQuantizer + Blas).
//
// Conventions (those of src/ops/cuda_ops.h): device pointers, row-major, asynchronous on `stream`,
// host-side argument checks throwing quest::Error. Requirements: K % 128 == 0 (the quantizer works
// on 128-chunks; the model presets guarantee it), pointers 16-byte aligned (cudaMalloc'ed buffers
// and row offsets that are multiples of 16 bytes).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "quant/cuda/offset_codes.h"
#include "quant/quant_spec.h"

namespace quest::cuda {

using bf16 = __nv_bfloat16;

enum class LowbitRoute : int { kInt8 = 0, kFp8 = 1 };

// Which kernel computes the kInt8 route (LowbitGemm::set_int8_kernel): kAuto = kSm90 where
// s8_gemm_sm90 runs (sm_90 device, shape and alignment it takes), else kCublasLt.
enum class Int8Kernel : int { kAuto = 0, kCublasLt = 1, kSm90 = 2 };

inline constexpr int kLowbitMaxBitsInt8 = 7;  // |c| <= 127
inline constexpr int kLowbitMaxBitsFp8 = 3;   // exact sums on the H100 (see above)

// True when `bits`-bit codes are exact in the route's code type.
inline bool lowbit_supported(LowbitRoute route, int bits) {
  return bits >= 1 && bits <= (route == LowbitRoute::kInt8 ? kLowbitMaxBitsInt8 : kLowbitMaxBitsFp8);
}
const char* lowbit_route_name(LowbitRoute route);

// The quantizer of one operand: the grid family of QUEST_SPEC.md section 3 (DeviceQuantizer's Grid
// family), with the mask rule already resolved (QuantSpec::mask_rule()).
struct LowbitQuant {
  int bits = 4;
  bool hadamard = true;
  int rule = 2;          // 0: no mask (ste), 1: clip |x| <= factor * scale, 2: trust |xq - x| <= factor * rms
  double factor = 0.0;   // rule 1: float(factor) * scale; rule 2: float(factor * rms) (as DeviceQuantizer)
  // ste / clip / trust and their hadamard- forms; throws quest::Error for other kinds and for bits
  // outside 1..8 (bits 8 is accepted here; the product then has no route).
  static LowbitQuant from_spec(const QuantSpec& spec);
};

// Which kernel lowbit_quantize runs (the same bits either way; tests and benchmarks pick):
// - kRowTeams: the training quantizer's kernel (ht_row_kernel.cuh: a row in the registers of a
//   team of warps) writing codes instead of values; the int8 route with the transform, rows of at
//   most 16384 entries;
// - kStagedRows: this file's kernels (the row staged in shared memory): every route and family;
// - kAuto: kRowTeams where it applies to rows of at most 12288 entries, else kStagedRows (faster
//   on longer rows, where the row-team kernel holds 8 vectors a lane).
enum class LowbitQuantKernel : int { kAuto = 0, kRowTeams = 1, kStagedRows = 2 };

// codes[rows, cols] (one byte each: int8 for kInt8, e4m3 for kFp8) = 2q - 1 of each entry;
// step[rows] = the row's grid step (DeviceQuantizer::row_steps()); mask [rows, (cols + 63) / 64]
// (MaskBits layout, SET = gradient zeroed) when not null and q.rule != 0. cols % 128 == 0,
// lowbit_supported(route, q.bits). x: the layer input (bf16) or the fp32 master weight.
// code_sums [rows] (not null; kInt8 with the transform, the row-team kernel, cols <= 16384): the
// offset codes q - qmin instead and each row's sum of them (offset_codes.h).
void lowbit_quantize(const bf16* x, void* codes, float* step, uint64_t* mask, int64_t rows,
                     int64_t cols, const LowbitQuant& q, LowbitRoute route, cudaStream_t stream,
                     LowbitQuantKernel kernel = LowbitQuantKernel::kAuto,
                     int32_t* code_sums = nullptr);
void lowbit_quantize(const float* x, void* codes, float* step, uint64_t* mask, int64_t rows,
                     int64_t cols, const LowbitQuant& q, LowbitRoute route, cudaStream_t stream,
                     LowbitQuantKernel kernel = LowbitQuantKernel::kAuto,
                     int32_t* code_sums = nullptr);

// The forward-only quantizer of bf16 activations for the kInt8 route (inference; the 7B layer of
// bench_lowbit_linear): the same method as lowbit_quantize (the transform, the row's Gaussian
// grid, odd codes 2q - 1, step[rows]) at close to the memory speed of one read of x, without the
// training quantizer's bit-exact arithmetic: the row's sum of squares is summed in fp32 per lane
// (then double), and the level comes from one multiply by RN(1/step). So a code differs from
// lowbit_quantize's only for an entry within ~1e-6 of a grid boundary (in units of the step),
// and then by one level; steps agree to ~1e-6 relative (lowbit_quantize_fast.cu). No mask.
// Requirements (quest::Error otherwise): q.hadamard, bits 1..7, cols a positive multiple of 128
// and at most 32768, x and codes 16-byte aligned. step may be null. code_sums [rows] (not null):
// the offset codes q - qmin instead and each row's sum of them (offset_codes.h).
bool lowbit_quantize_fast_supports(int64_t cols, const LowbitQuant& q);
void lowbit_quantize_fast(const bf16* x, int8_t* codes, float* step, int64_t rows, int64_t cols,
                          const LowbitQuant& q, cudaStream_t stream, int32_t* code_sums = nullptr);

// The integer product. Owns a cuBLASLt handle, its workspace and (kInt8) an int32 scratch of
// int32_scratch_bytes; plans (descriptors + algorithm) are cached per (route, shape, alignment).
// Calls on one LowbitGemm must be serialized (one per stream), like Blas.
class LowbitGemm {
 public:
  static constexpr size_t kDefaultScratchBytes = size_t(64) << 20;
  static constexpr size_t kDefaultWorkspaceBytes = size_t(32) << 20;
  explicit LowbitGemm(size_t int32_scratch_bytes = kDefaultScratchBytes,
                      size_t workspace_bytes = kDefaultWorkspaceBytes);
  ~LowbitGemm();
  LowbitGemm(const LowbitGemm&) = delete;
  LowbitGemm& operator=(const LowbitGemm&) = delete;

  // y[N, M] = (sx[n] / 2) * (sw[m] / 2) * sum_k xc[n, k] * wc[m, k], bf16 (overwritten).
  // xc [N, K], wc [M, K]: codes of `route` (lowbit_quantize); sx [N], sw [M]: the steps.
  // kInt8 through cuBLASLt: the rows of y go in chunks of max(16, int32_scratch_bytes / (4 M))
  // rows (rounded down to a multiple of 16), each an IMMA product into the scratch and a scaling
  // pass. Through s8_gemm_sm90: one launch, the scratch unused.
  // offsets (kInt8 only; not null): xc and wc hold offset codes with these row sums and widths
  // (offset_codes.h; w_sums 16-byte aligned), and y has the bits of the same product on the
  // signed codes they stand for.
  void forward(bf16* y, const void* xc, const float* sx, const void* wc, const float* sw,
               int64_t N, int64_t K, int64_t M, LowbitRoute route, cudaStream_t stream,
               const OffsetCodes* offsets = nullptr);

  // Test and benchmark hooks: the raw sums, no scales.
  // acc[N, M] = sum_k xc * wc exactly (int32; one IMMA product, no chunking).
  void int8_sums(int32_t* acc, const int8_t* xc, const int8_t* wc, int64_t N, int64_t K, int64_t M,
                 cudaStream_t stream);
  // acc[N, M] = sum_k xc * wc through the FP8 route's kernel family (e4m3 codes, fp32 out, outer
  // vector scales sx, sw, alpha = 1; pass vectors of ones for the plain sums).
  void fp8_sums(float* acc, const void* xc, const float* sx, const void* wc, const float* sw,
                int64_t N, int64_t K, int64_t M, cudaStream_t stream);

  // Autotuning (off by default): the first call of each (route, shape) times the heuristic's
  // candidate algorithms on the real operands (synchronizes the stream once; not inside a CUDA
  // graph capture) and keeps the fastest.
  void set_autotune(bool on);

  // The kInt8 route's kernel (kAuto by default). kSm90 forced on a device or shape it cannot take
  // makes forward throw quest::Error; kCublasLt forced is the reference the tests compare with.
  void set_int8_kernel(Int8Kernel k);
  Int8Kernel int8_kernel() const;

  size_t int32_scratch_bytes() const { return scratch_bytes_; }

 private:
  void* impl_ = nullptr;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  int32_t* scratch_ = nullptr;
  size_t scratch_bytes_ = 0;
};

// y[N, M] = bf16(acc[n, m] * (0.25 * sx[n]) * sw[m]) (the kInt8 route's scaling pass; exposed for
// the benchmark's breakdown). M % 4 == 0. offsets (not null): acc holds sums of offset codes of
// rows of K entries, corrected to the signed codes' sums first (offset_codes.h).
void lowbit_scale_int32(bf16* y, const int32_t* acc, const float* sx, const float* sw, int64_t N,
                        int64_t M, cudaStream_t stream, const OffsetCodes* offsets = nullptr,
                        int64_t K = 0);

}  // namespace quest::cuda
