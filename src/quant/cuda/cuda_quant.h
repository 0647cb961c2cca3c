#pragma once
// The quantizer family of QUEST_SPEC.md sections 2-4 on NVIDIA GPUs (issue 7 item 1): every
// quantizer as one fused pass over a tensor (Hadamard transform of the 128-blocks, row RMS,
// quantization, the trust mask bit-packed for the backward pass), and the matching backward.
//
// Numerical contract: on the same fp32 (or bf16-representable) input, the device forward computes
// the SAME fp32 numbers as the CPU reference (src/quant/*.cpp): the FWHT uses the CPU's stage order
// and operations, every float operation is an explicitly rounded intrinsic (no FMA contraction),
// round half to even, and the row statistics are accumulated in double as on the CPU. The only
// possible difference is the summation order of the double row sums (RMS, LSQ/PACT init), which
// can move a row's scale by one float ulp in rare rows; codes and masks then differ only at exact
// rounding ties of that row. tests/cuda/test_cuda_quant.cu checks this for every family member.
//
// Conventions (those of src/ops/cuda_ops.h): device pointers; every call is asynchronous on
// `stream`, allocates nothing and checks its arguments on the host (quest::Error). Layouts:
// - tensors: row-major [rows, cols]; the Hadamard transform works on each row's contiguous
//   128-chunks (cols % 128 == 0 when it is on);
// - masks: MaskBits's layout (quant/mask_bits.h): words_per_row = ceil(cols / 64) uint64 words per
//   row, bit (c & 63) of word (c >> 6) is entry c, SET = gradient zeroed, padding bits 0;
// - per-row steps: fp32 [rows].
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "quant/quant_spec.h"

namespace quest::cuda {

using bf16 = __nv_bfloat16;
namespace qdetail {
struct RowQuantArgs;  // kernels.h
}

// ---- Hadamard transform and conversions ---------------------------------------------------------
// out[rows, cols] = HT(in), orthonormal 128-blocks along each row (cols % 128 == 0); bitwise equal
// to quest::hadamard_transform_rows on fp32 data. out may alias in (same type).
void hadamard_rows(float* out, const float* in, int64_t rows, int64_t cols, cudaStream_t stream);
void hadamard_rows(bf16* out, const float* in, int64_t rows, int64_t cols, cudaStream_t stream);
void hadamard_rows(bf16* out, const bf16* in, int64_t rows, int64_t cols, cudaStream_t stream);
// out[n] = bf16(in[n]) (round to nearest even).
void convert(bf16* out, const float* in, int64_t n, cudaStream_t stream);

// Where a forward writes the integer codes of the low-precision product (DeviceQuantizer::
// forward_with_codes and the producer-fused forwards): codes [rows, cols] (null: none) and, for
// the offset form (offset_codes.h), sums [rows] (null: the odd codes 2q - 1).
struct CodesOut {
  int8_t* codes = nullptr;
  int32_t* sums = nullptr;
  CodesOut() = default;
  CodesOut(int8_t* c, int32_t* s = nullptr) : codes(c), sums(s) {}  // implicit: a plain pointer
};

// ---- gradient masks (the backward of every masking quantizer) -----------------------------------
// g <- [HT] . mask . [HT]: the optional transform before (ht_before: the quantizer's full form, the
// gradient arrives in the original domain), zeroing the masked entries (mask may be null: none),
// and the optional transform after (ht_after: back to the original domain). With a transform,
// cols % 128 == 0.
struct MaskBackward {
  const uint64_t* mask = nullptr;  // [rows, words_per_row(cols)] or null
  bool ht_before = false, ht_after = false;
};
inline int64_t mask_words_per_row(int64_t cols) { return (cols + 63) / 64; }
void mask_backward(float* grad, int64_t rows, int64_t cols, const MaskBackward& mb,
                   cudaStream_t stream);
void mask_backward(bf16* grad, int64_t rows, int64_t cols, const MaskBackward& mb,
                   cudaStream_t stream);
// dst += the same result computed from grad (grad unchanged; dst must not alias grad).
void mask_backward_accumulate(float* dst, const float* grad, int64_t rows, int64_t cols,
                              const MaskBackward& mb, cudaStream_t stream);

// The SwiGLU backward with the input-gradient mask and transform of the layer reading
// g = silu(a) * b (half form): dg = bf16(HT(M(dg_pre))) (M: mask, SET = zeroed; null: none),
// then da, db = swiglu_backward(dg, a, b), in one pass (swiglu_mask_backward.cu), bitwise that
// sequence. [rows, cols] each, cols % 128 == 0; da or db may alias dg_pre. Returns false,
// launching nothing, unless every pointer is 16-byte aligned and cols % 128 == 0.
bool mask_ht_swiglu_backward(bf16* da, bf16* db, const bf16* dg_pre, const uint64_t* mask,
                             const bf16* a, const bf16* b, int64_t rows, int64_t cols,
                             cudaStream_t stream);

// The RMSNorm backward (cuda::rmsnorm_backward, d = cols) of dln = bf16(HT(M(dln_pre))), the
// half-form input gradient of the layer(s) reading the normed rows (M: mask, SET = zeroed; null:
// none), in one pass that reads dln_pre once and writes no dln (rmsnorm_mask_backward.cu),
// bitwise that sequence. Returns false, launching nothing, unless d % 128 == 0, d <= 2048 and
// every pointer is 16-byte aligned; scratch: rmsnorm_backward_scratch(N, d) floats.
bool mask_ht_rmsnorm_backward(float* dx, bf16* dx_copy, float* dw, const bf16* dln_pre,
                              const uint64_t* mask, const float* x, const float* w,
                              const float* rstd, int64_t N, int64_t d, float* scratch,
                              cudaStream_t stream);
// out[0] += number of set bits in words[n] (masked entries, for statistics).
void count_bits(unsigned long long* out, const uint64_t* words, int64_t n, cudaStream_t stream);

// ---- the quantizers -----------------------------------------------------------------------------
// Full: each quantizer maps x to xq in the original domain (Hadamard quantizers: HT, quantize,
// HT back). Half: the Hadamard quantizers stay in the transform domain, xq = Q(HT(x)) (the layer
// multiplies there); not valid for quantizers without the transform.
enum class QuantForm { Full, Half };

// One quantizer of one tensor role (the device counterpart of make_quantizer(spec, role, cols)),
// with every buffer it needs for up to max_rows x cols entries, allocated in the constructor
// (cudaMalloc) and freed in the destructor; forward()/backward() allocate nothing.
//
// Families: ste / clip / trust (+ hadamard-), fp4 (+ hadamard-), sparse48 (+ hadamard-), lsq, pact.
// (none is rejected: a layer without a quantizer keeps no quantizer.)
//
// State (device memory owned here): the mask of the last forward (and PACT's sign bits), the
// per-row steps, LSQ's dxq/ds per entry, and the learned parameter with its gradient. backward()
// refers to the last forward() (same rows, same form), as on the CPU.
class DeviceQuantizer {
 public:
  DeviceQuantizer(const QuantSpec& spec, QuantRole role, int64_t max_rows, int64_t cols);
  ~DeviceQuantizer();
  // The device memory the constructor allocates for this spec and shape (memory plans).
  static int64_t device_bytes(const QuantSpec& spec, int64_t max_rows, int64_t cols);
  DeviceQuantizer(const DeviceQuantizer&) = delete;
  DeviceQuantizer& operator=(const DeviceQuantizer&) = delete;

  const QuantSpec& spec() const { return spec_; }
  bool uses_hadamard() const { return spec_.hadamard; }
  int64_t cols() const { return cols_; }
  int64_t max_rows() const { return max_rows_; }

  // xq[rows, cols] = Q(x[rows, cols]) in the given form; x and xq may alias when of one type.
  // LSQ/PACT: a learned value of 0 is first initialized from x (on the device, no host sync).
  void forward(const float* x, float* xq, int64_t rows, QuantForm form, cudaStream_t stream);
  void forward(const float* x, bf16* xq, int64_t rows, QuantForm form, cudaStream_t stream);
  void forward(const bf16* x, bf16* xq, int64_t rows, QuantForm form, cudaStream_t stream);
  void forward(const bf16* x, float* xq, int64_t rows, QuantForm form, cudaStream_t stream);

  // The integer codes of the low-precision product (docs/LOWBIT_GEMM.md): the Half-form forward
  // that also writes codes[rows, cols] = 2q - 1 (int8), where xq = (2q - 1) * step / 2 before
  // its rounding to the output type; with CodesOut::sums, the offset codes q - qmin instead and
  // each row's sum of them (offset_codes.h). Applies when codes_supported(): the grid family
  // (ste / clip / trust) with the transform, bits <= 7, cols <= 16384; codes 16-byte aligned.
  bool codes_supported() const;
  void forward_with_codes(const bf16* x, bf16* xq, CodesOut codes, int64_t rows,
                          cudaStream_t stream);
  void forward_with_codes(const float* x, bf16* xq, CodesOut codes, int64_t rows,
                          cudaStream_t stream);

  // The Half-form forward fused into its producer (fused_quantize.cu): xq (and codes when not
  // null, as forward_with_codes) = Q(HT(producer output)), bitwise the producer's op followed by
  // forward()/forward_with_codes() on its bf16 output. Applies when fused_supported(): the grid
  // family (ste / clip / trust, no learned parameter) with the transform. Returns false, launching
  // nothing and keeping the last forward's state, where the kernel does not apply (cols over
  // 16384, a pointer not 16-byte aligned); the caller then runs the two ops.
  // RMSNorm (cuda::rmsnorm_forward, d = cols): x fp32 [rows, cols], w fp32 [cols]; writes rstd
  // [rows] and, when ln is not null, the bf16 normed rows.
  // RMSNorm with the residual add in front (forward_add_rmsnorm): res_out = res_in + branch
  // (cuda::add's fp32 add of the bf16 branch output) is written, then RMSNorm as above on
  // res_out; bitwise cuda::add followed by forward_rmsnorm(res_out, ...). res_out may alias
  // res_in. On false nothing ran, res_out included.
  // SwiGLU (cuda::swiglu_forward): a, b bf16 [rows, cols]; when g is not null, g = silu(a) * b.
  bool fused_supported() const;
  bool forward_rmsnorm(const float* x, const float* w, float eps, float* rstd, bf16* ln, bf16* xq,
                       CodesOut codes, int64_t rows, cudaStream_t stream);
  bool forward_add_rmsnorm(const float* res_in, const bf16* branch, float* res_out, const float* w,
                           float eps, float* rstd, bf16* ln, bf16* xq, CodesOut codes, int64_t rows,
                           cudaStream_t stream);
  bool forward_swiglu(const bf16* a, const bf16* b, bf16* g, bf16* xq, CodesOut codes, int64_t rows,
                      cudaStream_t stream);

  // grad[rows, cols]: on entry dL/dxq of the last forward (in the domain of its xq: the transform
  // domain in the Half form), on exit dL/dx in the ORIGINAL domain (the Half form transforms back).
  // Accumulates (+=) the learned parameter's gradient. rows and form must be the last forward's.
  void backward(float* grad, int64_t rows, QuantForm form, cudaStream_t stream);
  void backward(bf16* grad, int64_t rows, QuantForm form, cudaStream_t stream);
  // dst += dL/dx computed from grad (grad unchanged): the weight gradient's accumulation.
  void backward_accumulate(float* dst, const float* grad, int64_t rows, QuantForm form,
                           cudaStream_t stream);

  // The gradient mask of the last forward (null when the family never masks: ste), in the domain
  // where the quantizer masks (the transform domain for Hadamard quantizers).
  const uint64_t* mask() const { return masks_ ? mask_ : nullptr; }
  int64_t words_per_row() const { return wpr_; }
  // Per-row step of the last forward: the grid step (grid, sparse48, PACT), the e2m1 unit (fp4),
  // |s| (LSQ). xq of the grid family is (2q - 1) * step / 2 with q integer.
  const float* row_steps() const { return step_; }
  int64_t last_rows() const { return rows_; }

  // The learned parameter (LSQ step, PACT alpha) and its gradient, one device float each; null for
  // the other families. 0 means "initialize from the next forward's data".
  bool has_param() const { return param_ != nullptr; }
  float* param() { return param_; }
  float* param_grad() { return param_ ? param_ + 1 : nullptr; }
  std::string param_name() const;  // "lsq_step", "pact_alpha", "" (as the CPU quantizers)
  // Synchronous host helpers (tests, checkpoints).
  float read_param() const;
  float read_param_grad() const;
  void write_param(float value, float grad = 0.0f);

 private:
  enum class Family { Grid, Fp4, Sparse48, Lsq, Pact };
  template <class TIn, class TOut>
  void forward_impl(const TIn* x, TOut* xq, int64_t rows, QuantForm form, cudaStream_t stream,
                    CodesOut codes = {});
  template <class TS, class TD>
  void backward_impl(const TS* grad, TD* dst, bool accumulate, int64_t rows, QuantForm form,
                     cudaStream_t stream);
  void check_call(int64_t rows, QuantForm form, const char* what) const;
  // The grid family's row-kernel arguments of a forward (Grid, Fp4, Sparse48).
  void row_args(qdetail::RowQuantArgs& a, int64_t rows, QuantForm form, CodesOut codes) const;
  void check_codes(CodesOut codes, QuantForm form) const;
  // The checks and the Half-form RowQuantArgs of a producer-fused forward named `what`.
  qdetail::RowQuantArgs fused_args(int64_t rows, CodesOut codes, const char* what) const;
  // forward_rmsnorm / forward_add_rmsnorm (branch and res_out null: no add).
  bool rmsnorm_impl(const float* x, const bf16* branch, float* res_out, const float* w, float eps,
                    float* rstd, bf16* ln, bf16* xq, CodesOut codes, int64_t rows,
                    cudaStream_t stream);

  QuantSpec spec_;
  Family family_;
  MaskRule rule_;
  bool masks_ = false;  // the family writes a mask
  int64_t max_rows_, cols_, wpr_;
  // Device buffers (owned).
  uint64_t* mask_ = nullptr;      // [max_rows, wpr]
  uint64_t* negative_ = nullptr;  // PACT: sign bits of the clipped entries [max_rows, wpr]
  float* step_ = nullptr;         // [max_rows]
  double* row_sum_ = nullptr;     // [max_rows] per-row partial sums (deterministic reductions)
  float* dstep_ = nullptr;        // LSQ: dxq/ds per entry [max_rows, cols]
  float* param_ = nullptr;        // LSQ/PACT: [0] value, [1] gradient, [2] sign at last forward
  // Host bookkeeping of the last forward.
  int64_t rows_ = 0;
  QuantForm form_ = QuantForm::Full;
};

}  // namespace quest::cuda
