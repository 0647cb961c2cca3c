#pragma once
// Internal launchers of the quantizer kernels (src/quant/cuda/*.cu), shared by DeviceQuantizer and
// the linear op. Host declarations only; each launcher checks nothing the caller already checked
// (DeviceQuantizer validates shapes and forms) except what it needs to launch safely.
#include <cuda_runtime.h>

#include <cstdint>
#include <sstream>

#include "core/error.h"
#include "quant/cuda/cuda_quant.h"

namespace quest::cuda::qdetail {

// Host-side argument errors: quest::Error built through an ostream (fmt's compile-time format
// strings, QUEST_CHECK, do not compile under nvcc's front end).
template <class... Args>
[[noreturn]] void raise(const Args&... args) {
  std::ostringstream s;
  (s << ... << args);
  throw Error(s.str());
}

// ---- row kernels: grid family, fp4, sparse 4:8 (row_quantize.cu)
// --------------------------------- One CTA per row. The row is staged in shared memory as fp32
// (cols floats of dynamic shared memory), optionally transformed, its rms taken in double,
// quantized, optionally transformed back and stored. The CTA owns the row's xq entries, its mask
// words and its step: every mask word of the row is written (padding bits 0), so the mask needs no
// clearing beforehand.
enum class RowFamily : int { Grid = 0, Fp4 = 1, Sparse48 = 2 };

struct RowQuantArgs {
  int64_t rows = 0, cols = 0;
  int bits = 0;             // Grid, Sparse48: 1..8
  double unit = 0.0;        // Grid, Sparse48: ALPHA[bits] (clip = unit * rms + 1e-8); Fp4: kFp4Unit
  int rule = 0;             // 0: no mask (ste), 1: clip |x| <= clip_factor * scale, 2: trust
  float clip_factor = 0.f;  // rule 1
  double trust = 0.0;       // rule 2: |xq - x| <= float(trust * rms)
  bool ht_in = false;       // transform the row first (Hadamard quantizers)
  bool ht_out = false;      // transform back after quantizing (the Full form)
  uint64_t* mask = nullptr;  // [rows, ceil(cols/64)], written when rule != 0 and not null
  float* step = nullptr;     // [rows] or null: the grid step (Fp4: the unit)
  // [rows, cols] or null: the odd codes 2q - 1 of the grid family (docs/LOWBIT_GEMM.md), for the
  // integer product. Only launch_ht_grid_rows writes them (the transform on, the Half form,
  // bits <= 7); launch_row_quantize rejects codes on any other path.
  int8_t* codes = nullptr;
  // [rows] or null: with codes, write the offset codes q - qmin instead of the odd ones
  // (offset_codes.h) and each row's sum of them here.
  int32_t* code_sums = nullptr;
  // Benchmarks and tests only: force the CTA-per-row kernel (legacy), or pick the register slice
  // of ht_grid_rows_kernel (vec_variant 0: automatic; 1, 2: 4 / 8 vectors a lane; 3: 4 vectors,
  // two interleaved sum chains).
  bool legacy = false;
  int vec_variant = 0;
};
// Largest cols the row kernel supports (its row lives in shared memory).
int64_t row_quantize_max_cols();
// The row kernel's CTA size for rows of cols entries: it fixes the order of the double row sums,
// which every kernel that must give the same steps follows. kMaxRowThreads: the largest (rows of
// 1024 entries and more).
inline constexpr int kMaxRowThreads = 256;
int row_kernel_threads(int64_t cols);
// Dispatches the grid family with the transform to launch_ht_grid_rows (unless a.legacy), the
// rest to row_quantize_kernel.
template <class TIn, class TOut>
void launch_row_quantize(RowFamily family, const TIn* x, TOut* xq, const RowQuantArgs& a,
                         cudaStream_t stream);

// ---- the grid family with the transform at memory speed (ht_row_quantize.cu) --------------------
// Same bits as row_quantize_kernel. xq may be null when a.codes is not (codes only). Returns
// false (launching nothing) where it does not apply: no transform, cols % 128 != 0, rows over
// 16384 entries, x / xq not 16-byte aligned, or neither xq nor codes. The
// caller has checked the rest (launch_row_quantize's checks).
template <class TIn, class TOut>
bool launch_ht_grid_rows(const TIn* x, TOut* xq, const RowQuantArgs& a, cudaStream_t stream);

// ---- the same fused into its producer (fused_quantize.cu) -----------------------------------------
// The Half form only (a.ht_out false), bf16 xq. Bitwise the producer's kernel followed by
// launch_ht_grid_rows on its bf16 output. Return false (launching nothing) where the kernel does
// not apply (launch_ht_grid_rows's conditions, or a pointer not 16-byte aligned).
// RMSNorm (rmsnorm_forward): x [rows, cols] fp32, w [cols] fp32; writes rstd [rows] and, when ln
// is not null, ln = the bf16 normed rows. With branch and res_out (both or neither): the residual
// add in front, bitwise cuda::add(res_out, x, branch) then the above on res_out; res_out
// [rows, cols] fp32 is written (may alias x), branch [rows, cols] bf16.
bool launch_rmsnorm_ht_grid_rows(const float* x, const bf16* branch, float* res_out,
                                 const float* w, float eps, float* rstd, bf16* ln, bf16* xq,
                                 const RowQuantArgs& a, cudaStream_t stream);
// SwiGLU (swiglu_forward): a, b [rows, cols] bf16; when g is not null, g = bf16(silu(a) * b).
bool launch_swiglu_ht_grid_rows(const bf16* a_in, const bf16* b_in, bf16* g, bf16* xq,
                                const RowQuantArgs& a, cudaStream_t stream);

// ---- learned quantizers: LSQ and PACT (lsq_pact.cu)
// ---------------------------------------------- Never with the Hadamard transform. The learned
// value lives on the device (param[0]); its gradient accumulates into param[1]; param[2] receives
// the sign of the value at the forward (the grid uses |value|, and the value gets the gradient of
// |value|). A value of 0 is initialized from the forward's data first (two kernels: per-row sums,
// then one CTA that sums the rows in a fixed order); both early-exit when the value is already
// non-zero.
struct LearnedArgs {
  bool lsq = true;  // LSQ, else PACT
  int64_t rows = 0, cols = 0;
  int bits = 0;
  double alpha = 0.0;            // PACT's init: ALPHA[bits]
  float* param = nullptr;        // [3]: value, gradient, sign
  uint64_t* mask = nullptr;      // [rows, wpr]: entries without an x gradient (clipped)
  uint64_t* negative = nullptr;  // PACT [rows, wpr]: clipped entries with x < 0
  float* dstep = nullptr;        // LSQ [rows, cols]: dxq/ds
  float* step = nullptr;         // [rows] or null: |s| (LSQ) / the grid step (PACT)
  double* row_sum = nullptr;     // [rows] scratch
};
template <class TIn, class TOut>
void launch_learned_forward(const TIn* x, TOut* xq, const LearnedArgs& a, cudaStream_t stream);
template <class TS, class TD>
void launch_learned_backward(const TS* grad, TD* dst, bool accumulate, const LearnedArgs& a,
                             cudaStream_t stream);

// ---- transforms and masks (hadamard.cu)
// ---------------------------------------------------------- dst = [HT] . mask . [HT] (src), or dst
// += it (accumulate). dst may alias src unless accumulating. legacy (benchmarks): the one-warp-
// per-block kernel instead of the vectorized one (same bits).
template <class TS, class TD>
void launch_mask_backward(const TS* src, TD* dst, bool accumulate, int64_t rows, int64_t cols,
                          const MaskBackward& mb, cudaStream_t stream, bool legacy = false);

// A device allocation of n elements (null for n <= 0); the caller frees it with cudaFree.
template <class T>
T* device_alloc(int64_t n) {
  if (n <= 0) return nullptr;
  void* p = nullptr;
  QUEST_CUDA_CHECK(cudaMalloc(&p, size_t(n) * sizeof(T)));
  return static_cast<T*>(p);
}

}  // namespace quest::cuda::qdetail

// QUEST_QUANT_REQUIRE(cond, "message ", value, ...): throws quest::Error when cond is false.
#define QUEST_QUANT_REQUIRE(cond, ...)                       \
  do {                                                       \
    if (!(cond)) ::quest::cuda::qdetail::raise(__VA_ARGS__); \
  } while (0)
