#pragma once
// CudaLinearOp: quest::LinearOp (quant/linear_op.h) on the device, with the same semantics and
// forms: y[N,out] = Q_x(x[N,in]) . Q_w(W[out,in])^T through Blas (cuBLASLt, bf16 operands, fp32
// accumulation). Read linear_op.h first; the differences are the dtypes of the device conventions
// (src/ops/cuda_ops.h): x, y, dy, dx in bf16, dW in fp32 (accumulated), the product operands in
// bf16 (the quantized values rounded to bf16), the quantizers computed in fp32.
//
// Forms: half (the default when every quantizer present is Hadamard-based or none): x and W are
// transformed and quantized in one fused pass each (DeviceQuantizer's Half form), the product runs
// in the transform domain, dx = HT(mask_x . (dY . Wq_h)) and dW += HT(mask_w . (dY^T . Xq_h)), the
// mask and HT fused in one pass. Otherwise the full form, each quantizer transforming back itself.
//
// Invariants (as LinearOp)
// - prepare_weight() once per optimizer step, before the step's forwards; forward() never
//   re-quantizes the weight. Each forward(x) is followed by its backward() before the next forward.
// - Ownership: the op owns (cudaMalloc in the constructor, freed in the destructor) the bf16
//   product weight [out, in], the bf16 product input [max_rows, in] (when x is quantized or
//   transformed), the fp32 dW scratch [out, in] (when the weight is quantized or transformed) and
//   its quantizers' state. Without an input quantizer in the full form it keeps a pointer to x; in
//   that case (and when prepare_weight(bf16*) gets an unquantized weight in the full form) the
//   caller keeps that memory alive until backward(). Blas is the caller's (one per stream).
// - forward()/backward() allocate nothing and are asynchronous on `stream`. The learned
//   parameters (LSQ step, PACT alpha) live on the device; their gradients accumulate (+=) there.
//
// Two options change how, not what, the op computes:
// - The low-precision forward product (use_lowbit_product; docs/LOWBIT_GEMM.md): where the weight
//   and input quantizers both give integer codes (the grid family with the transform, <= 7 bits,
//   half form), the forward product runs on int8 tensor cores, y = (sx / 2)(sw / 2) sum cx cw
//   with exact integer sums and the two row steps in fp32: the product of the dequantized
//   operands up to fp32 rounding (the bf16 product rounds xq and wq to bf16 first, which the
//   codes avoid). The codes come from the same fused quantizer pass that writes xq (no second
//   quantization), the weight's from prepare_weight (once per optimizer step). The backward is
//   unchanged: bf16 products of the saved xq and wq. The codes are offset codes with row sums
//   (offset_codes.h) where the product runs s8_gemm_sm90's persistent 128 x 256 tile, else the
//   signed odd codes: the same y either way.
// - Sharing the quantized input (share_input_quantization): the MLP's w1 and w2 read the same
//   RMSNorm output; with stateless input quantizers of one spec, w2 takes w1's xq, codes, steps
//   and mask instead of quantizing the same x again. Invariant the caller keeps: the source's
//   forward on x comes right before this op's forward on the same x (and N), with x unchanged.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ops/cuda/side_stream.h"
#include "ops/cuda_ops.h"
#include "quant/cuda/cuda_quant.h"
#include "quant/cuda/lowbit_gemm.h"
#include "quant/quant_spec.h"

namespace quest::cuda {

// The input codes of the integer forward products of one stream's ops. An op's input codes live
// from its quantizer pass to its product right after (and, input sharing, the sharing op's
// product next); no backward reads them. So all ops of a stream can write them into one buffer,
// sized for the largest (max_rows x in): at 200M, 64 x 512 tokens, one buffer of 117 MB instead
// of 50 of 42-117 MB (2.9 GB). Grown by CudaLinearOp::use_lowbit_product at set-up, never during
// a step.
class InputCodeBuffer {
 public:
  InputCodeBuffer() = default;
  ~InputCodeBuffer();
  InputCodeBuffer(const InputCodeBuffer&) = delete;
  InputCodeBuffer& operator=(const InputCodeBuffer&) = delete;
  void reserve(int64_t bytes);  // at least `bytes` (a larger buffer drops the contents)
  int8_t* data() const { return data_; }
  // The op whose codes it holds (the last to write them), checked before a sharing op takes them.
  const void* writer = nullptr;

 private:
  int8_t* data_ = nullptr;
  int64_t bytes_ = 0;
};

class CudaLinearOp {
 public:
  // Throws quest::Error for an invalid config or one that does not fit in_features (Hadamard needs
  // in % 128 == 0, sparse 4:8 in % 8 == 0).
  CudaLinearOp(int64_t in, int64_t out, int64_t max_rows, const QuantConfig& quant, Blas& blas);
  ~CudaLinearOp();
  // The device memory an op of this shape allocates (its buffers and quantizers), with the
  // low-precision product's weight codes and row sums when `lowbit` (its input codes are in the
  // stream's InputCodeBuffer, not counted here). For memory plans; an upper bound.
  static int64_t device_bytes(int64_t in, int64_t out, int64_t max_rows, const QuantConfig& quant,
                              bool lowbit);
  CudaLinearOp(const CudaLinearOp&) = delete;
  CudaLinearOp& operator=(const CudaLinearOp&) = delete;

  int64_t in_features() const { return in_; }
  int64_t out_features() const { return out_; }
  int64_t max_rows() const { return max_rows_; }
  const QuantConfig& quant_config() const { return quant_; }
  bool half_form() const { return half_; }
  // The product weight is W itself in bf16 (no weight quantizer, no transform).
  bool weight_is_plain() const { return !wq_ && !half_; }

  // Quantizes (and/or transforms) the weight [out, in] from the fp32 master weight or its bf16
  // copy. The fp32 master gives exactly the CPU's quantized values (then rounded to bf16).
  void prepare_weight(const float* w, cudaStream_t stream);
  void prepare_weight(const bf16* w, cudaStream_t stream);
  // Uses w ([out, in], in the product's domain) as the product weight as it stands, until the next
  // prepare_weight() (the loader of packed exports). Copies w.
  void set_product_weight(const bf16* w, cudaStream_t stream);

  void forward(const bf16* x, bf16* y, int64_t N, cudaStream_t stream);
  // forward() of the producer's output, with the producer run here (issue 9 item 3):
  // - forward_rmsnorm: ln = rmsnorm_forward(res, norm_w, eps) (rstd written), then forward(ln);
  // - forward_swiglu: g = swiglu_forward(a, b), then forward(g).
  // Where the input quantizer has a producer-fused pass (DeviceQuantizer::fused_supported, the
  // half form, fused_producers() on, not taking another op's input), one kernel computes the
  // quantized input straight from the producer's inputs, bitwise the same xq, mask, steps and
  // codes, and writes ln / g only when write_ln / write_g (another reader needs them); otherwise
  // the two ops run and ln / g are always written. Either way the op remembers ln / g as its last
  // input, so an op sharing this one's quantized input (share_input_quantization) still matches
  // it. Same y, same backward as the plain sequence.
  void forward_rmsnorm(const float* res, const float* norm_w, float eps, float* rstd, bf16* ln,
                       bool write_ln, bf16* y, int64_t N, cudaStream_t stream);
  // forward_rmsnorm with the residual add in front: res_out = res_in + branch (cuda::add, fp32
  // res_in and res_out, bf16 branch; res_out may alias res_in) is always written, then
  // forward_rmsnorm(res_out, ...). Fused: one kernel (the quantized input's, or with fused
  // producers on and no fused quantizer, cuda::add_rmsnorm_forward before forward(ln));
  // otherwise cuda::add then the plain path. Bitwise the same either way.
  void forward_add_rmsnorm(const float* res_in, const bf16* branch, float* res_out,
                           const float* norm_w, float eps, float* rstd, bf16* ln, bool write_ln,
                           bf16* y, int64_t N, cudaStream_t stream);
  void forward_swiglu(const bf16* a, const bf16* b, bf16* g, bool write_g, bf16* y, int64_t N,
                      cudaStream_t stream);
  // The producer-fused passes on (default; the environment variable QUEST_FUSED_PRODUCERS=0 at
  // construction turns them off, for before/after measurements in one binary) or off.
  void set_fused_producers(bool on) { fused_producers_ = on; }
  bool fused_producers() const { return fused_producers_; }

  // The input gradient's mask pass that a backward left to its caller (defer_mask): dx <-
  // bf16(HT(M(dx))), the half form's (M: `mask`, SET = zeroed; null: the transform alone), which
  // the caller folds into the next kernel reading dx (mask_ht_rmsnorm_backward) or runs itself
  // (mask_backward with ht_after) before anything else reads dx. owed == false: nothing left.
  struct PendingInputMask {
    bool owed = false;
    const uint64_t* mask = nullptr;
  };

  // dx[N,in] overwritten (skipped when null); dw[out,in] accumulates (skipped when null). With
  // defer_mask, a mask pass of the half form (an input quantizer of the grid family with the
  // transform, or none) is left to the caller (see PendingInputMask).
  PendingInputMask backward(const bf16* dy, bf16* dx, float* dw, int64_t N, cudaStream_t stream,
                            bool defer_mask = false);
  // backward() of a layer reading g = silu(a) * b, with SwiGLU's backward: da, db (overwritten)
  // and dw (accumulates). Where the input gradient's mask and transform are the half form's
  // (an input quantizer of the grid family with the transform, or none), one pass applies them
  // and the SwiGLU backward (mask_ht_swiglu_backward) to dg_pre = dY . Wq written into dg;
  // otherwise backward() writes dg and swiglu_backward follows. Same results either way.
  void backward_swiglu(const bf16* dy, float* dw, const bf16* a, const bf16* b, bf16* da,
                       bf16* db, bf16* dg, int64_t N, cudaStream_t stream);
  // The backward of two layers that read the same input x (the MLP's w1 and w2): dx = dx_a + dx_b
  // (overwritten), dwa and dwb accumulate. When b took a's quantized input, or neither quantizes
  // its input, the masks agree and the transform is linear, so the second product accumulates
  // onto the first and one mask pass follows (no add, one pass fewer; deferrable as in
  // backward()); otherwise the two backwards run and scratch [N, in] holds b's dx before the add.
  static PendingInputMask backward_shared_input(CudaLinearOp& a, const bf16* dya, float* dwa,
                                                CudaLinearOp& b, const bf16* dyb, float* dwb,
                                                bf16* dx, bf16* scratch, int64_t N,
                                                cudaStream_t stream, bool defer_mask = false);

  // Runs the weight gradient (the dW product and the mask pass of a quantized or transformed
  // weight) on the side stream (side_stream.h; null: on the backward's own stream, the default):
  // the side follows the backward's stream up to that point, which goes on with the next op, and
  // records its reads of dY and of the saved input (SideStream::reading). The caller guards its
  // later writes of dY, and joins the side back before anything reads dw (or the learned
  // parameters' gradients) and before this op's next forward or backward.
  void set_weight_stream(SideStream* side) { side_ = side; }

  // Switches the low-precision forward product on with `gemm` (the caller's, one per stream like
  // Blas; null switches it off). Returns whether it applies to this layer. Takes effect at the
  // next prepare_weight() (which writes the weight's codes); set_product_weight() (a packed
  // export's values, no codes) keeps the bf16 product until the next prepare_weight().
  // codes: where the input codes go, shared by the stream's ops (grown to fit this op; the
  // caller's, alive while the op is); null: a buffer of the op's own.
  bool use_lowbit_product(LowbitGemm* gemm, InputCodeBuffer* codes = nullptr);
  // True when the next forward() runs the integer product.
  bool lowbit_active() const { return gemm_ != nullptr && wcodes_ready_; }

  // Takes `src`'s quantized input when forward() gets the x and N of src's last forward (see the
  // header). Returns whether it applies: both input quantizers without a learned parameter, with
  // equal specs, equal in_features and form, and the same form of codes (call after
  // use_lowbit_product); false leaves this op quantizing its own input.
  bool share_input_quantization(CudaLinearOp& src);

  // True when this op takes src's quantized input (share_input_quantization(src) applied).
  bool shares_input_with(const CudaLinearOp& src) const { return share_src_ == &src; }

  // The quantizers (null when the role is not quantized): masks, steps, learned parameters. The
  // input quantizer is the one that quantized the last forward's input (src's when shared).
  DeviceQuantizer* weight_quantizer() { return wq_.get(); }
  DeviceQuantizer* input_quantizer() { return shared_now_ ? share_src_->xq_.get() : xq_.get(); }
  const DeviceQuantizer* weight_quantizer() const { return wq_.get(); }
  const DeviceQuantizer* input_quantizer() const {
    return shared_now_ ? share_src_->xq_.get() : xq_.get();
  }

  // Learned quantizer parameters, named as LinearOp's ("weight.lsq_step", "input.pact_alpha").
  // value and grad are device pointers to one float each.
  struct LearnedParam {
    std::string name;
    float* value;
    float* grad;
  };
  std::vector<LearnedParam> learned_params();

  // The operands of the product: the weight after prepare_weight() and the input of the last
  // forward() ([out, in] and [N, in], bf16, in the transform domain in the half form).
  const bf16* product_weight() const { return w_; }
  const bf16* product_input() const { return x_; }

 private:
  QuantForm form() const { return half_ ? QuantForm::Half : QuantForm::Full; }
  // The parts of backward(): the argument checks; dx (+)= dY . Wq; the input quantizer's mask and
  // transform on dx; dw += the masked weight gradient (nothing when dw is null).
  void check_backward(int64_t N, bool has_dx) const;
  // forward()'s argument checks (a prepared weight, N within the planned rows), for `what`.
  void check_forward(int64_t N, const char* what) const;
  void input_gradient_product(const bf16* dy, bf16* dx, bool accumulate, cudaStream_t stream);
  void mask_input_gradient(bf16* dx, cudaStream_t stream);
  // What a deferred mask_input_gradient would owe: the half form's mask pass (owed), or nothing
  // deferrable (another quantizer's backward, or no pass at all).
  PendingInputMask deferrable_input_mask() const;
  void weight_gradient(const bf16* dy, float* dw, cudaStream_t stream);
  // forward_rmsnorm (branch, res_out null) and forward_add_rmsnorm.
  void rmsnorm_impl(const float* res, const bf16* branch, float* res_out, const float* norm_w,
                    float eps, float* rstd, bf16* ln, bool write_ln, bf16* y, int64_t N,
                    cudaStream_t stream);
  // Whether forward_rmsnorm / forward_swiglu may run the fused pass.
  bool fusable() const { return fused_producers_ && half_ && xq_ && xq_->fused_supported() && !share_src_; }
  // After a fused pass wrote x_buf_ (and xcodes_ when xc): the bookkeeping of forward(), then
  // the product.
  void forward_fused_tail(const bf16* x, const int8_t* xc, bf16* y, int64_t N, cudaStream_t stream);
  // The product y = x_ . w_ (or the integer product from the codes xc: offset codes where xs,
  // their row sums, is not null), forward()'s last part.
  void forward_product(const int8_t* xc, const int32_t* xs, bf16* y, int64_t N,
                       cudaStream_t stream);

  int64_t in_, out_, max_rows_;
  QuantConfig quant_;
  Blas& blas_;
  bool half_ = false;
  std::unique_ptr<DeviceQuantizer> wq_, xq_;
  bf16* w_buf_ = nullptr;    // [out, in]
  bf16* x_buf_ = nullptr;    // [max_rows, in] when x is quantized or transformed
  float* dw_buf_ = nullptr;  // [out, in] when W is quantized or transformed
  const bf16* w_ = nullptr;  // the product weight (w_buf_ or the caller's bf16 weight)
  const bf16* x_ = nullptr;  // the product input of the last forward (x_buf_ or x)
  int64_t n_ = 0;            // rows of the last forward
  const bf16* last_x_ = nullptr;  // the caller's x of the last forward (input sharing)
  // Low-precision product: the caller's LowbitGemm, the codes of W [out, in] and of the input
  // [max_rows, in], signed or (offset_codes_) offset codes with their row sums (offset_codes.h);
  // wcodes_ready_ while the weight codes match the product weight.
  LowbitGemm* gemm_ = nullptr;
  int8_t* wcodes_ = nullptr;
  InputCodeBuffer* xcodes_ = nullptr;  // the stream's (use_lowbit_product) or own_xcodes_
  std::unique_ptr<InputCodeBuffer> own_xcodes_;
  int8_t* xcodes() const { return xcodes_ ? xcodes_->data() : nullptr; }
  int32_t* wsums_ = nullptr;  // [out] (offset_codes_)
  int32_t* xsums_ = nullptr;  // [max_rows] (offset_codes_)
  bool offset_codes_ = false;  // the codes' form (use_lowbit_product)
  int32_t* wsums() const { return offset_codes_ ? wsums_ : nullptr; }
  int32_t* xsums() const { return offset_codes_ ? xsums_ : nullptr; }
  // Where a quantizer pass writes this op's input codes xc (xcodes(), or null: none): with their
  // row sums in the offset form. Marks this op as the buffer's writer.
  CodesOut input_codes(int8_t* xc) {
    if (xc) xcodes_->writer = this;
    return {xc, xc ? xsums() : nullptr};
  }
  bool wcodes_ready_ = false;
  bool xcodes_valid_ = false;  // the last forward wrote its input codes (xcodes())
  // Input sharing: the source op, and whether the last forward took its input.
  CudaLinearOp* share_src_ = nullptr;
  bool shared_now_ = false;
  bool fused_producers_ = true;
  SideStream* side_ = nullptr;  // set_weight_stream
};

}  // namespace quest::cuda
