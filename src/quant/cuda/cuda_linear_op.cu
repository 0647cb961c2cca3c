// CudaLinearOp: LinearOp (linear_op.cpp) on the device. Each step mirrors the CPU op's line for
// line; the comments name the CPU counterpart.
#include "quant/cuda/cuda_linear_op.h"

#include <cstdlib>
#include <cstring>

#include "ops/cuda/device_profile.h"
#include "quant/cuda/kernels.h"
#include "quant/cuda/s8_gemm_sm90.h"

namespace quest::cuda {

using qdetail::device_alloc;

CudaLinearOp::CudaLinearOp(int64_t in, int64_t out, int64_t max_rows, const QuantConfig& quant,
                           Blas& blas)
    : in_(in), out_(out), max_rows_(max_rows), quant_(quant), blas_(blas) {
  // Measurement switch (before/after in one binary): QUEST_FUSED_PRODUCERS=0 starts with the
  // producer-fused passes off.
  if (const char* e = std::getenv("QUEST_FUSED_PRODUCERS")) fused_producers_ = std::strcmp(e, "0") != 0;
  QUEST_QUANT_REQUIRE(in > 0 && out > 0 && max_rows > 0, "CudaLinearOp: bad shape in=", in,
                      " out=", out, " max_rows=", max_rows);
  quant.validate();
  if (!quant.weight.is_none())
    wq_ = std::make_unique<DeviceQuantizer>(quant.weight, QuantRole::Weight, out, in);
  if (!quant.input.is_none())
    xq_ = std::make_unique<DeviceQuantizer>(quant.input, QuantRole::Input, max_rows, in);
  // LinearOp::set_quant: half only when every quantizer present works in the Hadamard domain.
  const bool w_ok = !wq_ || wq_->uses_hadamard(), x_ok = !xq_ || xq_->uses_hadamard();
  half_ = quant.form == HadamardForm::Half && quant.uses_hadamard() && w_ok && x_ok;
  // (A Hadamard quantizer is present, so its constructor has checked in % 128 == 0.)
  try {
    w_buf_ = device_alloc<bf16>(out * in);
    if (xq_ || half_) x_buf_ = device_alloc<bf16>(max_rows * in);
    if (wq_ || half_) dw_buf_ = device_alloc<float>(out * in);
  } catch (...) {
    cudaFree(w_buf_), cudaFree(x_buf_), cudaFree(dw_buf_);
    throw;
  }
}

CudaLinearOp::~CudaLinearOp() {
  cudaFree(w_buf_);
  cudaFree(x_buf_);
  cudaFree(dw_buf_);
  cudaFree(wcodes_);
  cudaFree(wsums_);
  cudaFree(xsums_);
}

InputCodeBuffer::~InputCodeBuffer() { cudaFree(data_); }

void InputCodeBuffer::reserve(int64_t bytes) {
  if (bytes <= bytes_) return;
  int8_t* p = device_alloc<int8_t>(bytes);
  cudaFree(data_);
  data_ = p, bytes_ = bytes, writer = nullptr;
}

int64_t CudaLinearOp::device_bytes(int64_t in, int64_t out, int64_t max_rows,
                                   const QuantConfig& quant, bool lowbit) {
  // The constructor's: the bf16 product weight always, the bf16 product input and the fp32 dW
  // scratch where anything is quantized or transformed (an upper bound of its conditions), the
  // quantizers; use_lowbit_product's: the weight codes and both row sums.
  const bool quantized = quant.quantized() || quant.uses_hadamard();
  int64_t bytes = out * in * int64_t(sizeof(bf16));
  if (quantized) bytes += max_rows * in * int64_t(sizeof(bf16)) + out * in * int64_t(sizeof(float));
  bytes += DeviceQuantizer::device_bytes(quant.weight, out, in) +
           DeviceQuantizer::device_bytes(quant.input, max_rows, in);
  if (quantized && lowbit) bytes += out * in + (out + max_rows) * int64_t(sizeof(int32_t));
  return bytes;
}

bool CudaLinearOp::use_lowbit_product(LowbitGemm* gemm, InputCodeBuffer* codes) {
  gemm_ = nullptr;
  wcodes_ready_ = false;
  offset_codes_ = false;
  if (!gemm || !half_ || !wq_ || !xq_ || !wq_->codes_supported() || !xq_->codes_supported())
    return false;
  if (!wcodes_) wcodes_ = device_alloc<int8_t>(out_ * in_);
  if (!codes) {
    if (!own_xcodes_) own_xcodes_ = std::make_unique<InputCodeBuffer>();
    codes = own_xcodes_.get();
  }
  codes->reserve(max_rows_ * in_);
  xcodes_ = codes;
  // The offset form where the product runs our persistent 128 x 256 kernel (long K, wide
  // outputs: the 7B layers, 200M's down projection): there its epilogue prefetches the column
  // sums with the scales, and the product at the power cap is 5-17% faster on offset codes (H100,
  // docs/PERF.md session 14). The short-K ping-pong tiles of the small presets load them in
  // place, and 30M training was 1% slower on offset codes: those keep the signed form.
  offset_codes_ = s8_gemm_sm90_available() && xq_->spec().bits <= kOffsetMaxBits &&
                  wq_->spec().bits <= kOffsetMaxBits &&
                  s8_gemm_sm90_tile(max_rows_, in_, out_) == S8Sm90Tile::k128x256p;
  if (offset_codes_) {
    if (!wsums_) wsums_ = device_alloc<int32_t>(out_);
    if (!xsums_) xsums_ = device_alloc<int32_t>(max_rows_);
  }
  gemm_ = gemm;
  return true;
}

bool CudaLinearOp::share_input_quantization(CudaLinearOp& src) {
  share_src_ = nullptr;
  shared_now_ = false;
  const auto stateless = [](const DeviceQuantizer* q) { return q && !q->has_param(); };
  if (&src == this || src.share_src_ || !stateless(xq_.get()) || !stateless(src.xq_.get()) ||
      !(xq_->spec() == src.xq_->spec()) || in_ != src.in_ || half_ != src.half_ ||
      max_rows_ > src.max_rows_ || offset_codes_ != src.offset_codes_)
    return false;
  share_src_ = &src;
  return true;
}

void CudaLinearOp::prepare_weight(const float* w, cudaStream_t stream) {
  QUEST_DEVICE_PROFILE("quantize_weight", stream);
  wcodes_ready_ = gemm_ != nullptr;
  if (gemm_)
    wq_->forward_with_codes(w, w_buf_, {wcodes_, wsums()}, out_, stream);  // Q(HT(W)), its codes
  else if (wq_)
    wq_->forward(w, w_buf_, out_, form(), stream);  // half: Q(HT(W)); full: Q(W) (+ HT back)
  else if (half_)
    hadamard_rows(w_buf_, w, out_, in_, stream);
  else
    convert(w_buf_, w, out_ * in_, stream);
  w_ = w_buf_;
}

void CudaLinearOp::prepare_weight(const bf16* w, cudaStream_t stream) {
  wcodes_ready_ = gemm_ != nullptr;
  if (gemm_) {
    wq_->forward_with_codes(w, w_buf_, {wcodes_, wsums()}, out_, stream);
  } else if (wq_) {
    wq_->forward(w, w_buf_, out_, form(), stream);
  } else if (half_) {
    hadamard_rows(w_buf_, w, out_, in_, stream);
  } else {
    w_ = w;  // the caller's bf16 weight, as LinearOp keeps a pointer to W
    return;
  }
  w_ = w_buf_;
}

void CudaLinearOp::set_product_weight(const bf16* w, cudaStream_t stream) {
  QUEST_CUDA_CHECK(cudaMemcpyAsync(w_buf_, w, size_t(out_ * in_) * sizeof(bf16),
                                   cudaMemcpyDeviceToDevice, stream));
  w_ = w_buf_;
  wcodes_ready_ = false;  // values without codes: the bf16 product
}

void CudaLinearOp::forward(const bf16* x, bf16* y, int64_t N, cudaStream_t stream) {
  check_forward(N, "forward");
  const bool lowbit = lowbit_active();
  const int8_t* xc = nullptr;  // the input's (offset) codes for the integer product
  const int32_t* xs = nullptr;  // and their row sums
  shared_now_ = share_src_ && share_src_->last_x_ == x && share_src_->n_ == N && x;
  if (shared_now_) {  // the source quantized this x right before (see the header's invariant)
    x_ = share_src_->x_;
    // Its codes, if the stream's buffer still holds them (the invariant says it does).
    if (share_src_->xcodes_valid_ && share_src_->xcodes_->writer == share_src_)
      xc = share_src_->xcodes(), xs = share_src_->xsums();
  } else if (xq_) {
    QUEST_DEVICE_PROFILE("quantize_input", stream);
    if (lowbit) {
      xq_->forward_with_codes(x, x_buf_, input_codes(xcodes()), N, stream);
      xc = xcodes(), xs = xsums();
    } else {
      xq_->forward(x, x_buf_, N, form(), stream);
    }
    x_ = x_buf_;
  } else if (half_) {
    QUEST_DEVICE_PROFILE("hadamard_input", stream);
    hadamard_rows(x_buf_, x, N, in_, stream);
    x_ = x_buf_;
  } else {
    x_ = x;
  }
  xcodes_valid_ = !shared_now_ && xc != nullptr;
  last_x_ = x;
  n_ = N;
  forward_product(xc, xs, y, N, stream);
}

void CudaLinearOp::forward_product(const int8_t* xc, const int32_t* xs, bf16* y, int64_t N,
                                   cudaStream_t stream) {
  // The input's codes must have the weight codes' form (a sharing source's may not, if it was
  // set up after share_input_quantization); else the bf16 product of the values, as without codes.
  if (lowbit_active() && xc && (xs != nullptr) == offset_codes_) {
    QUEST_DEVICE_PROFILE("linear_forward_int8", stream, in_, out_);
    const OffsetCodes offsets{xs, wsums_, input_quantizer()->spec().bits, wq_->spec().bits};
    gemm_->forward(y, xc, input_quantizer()->row_steps(), wcodes_, wq_->row_steps(), N, in_, out_,
                   LowbitRoute::kInt8, stream, xs ? &offsets : nullptr);
    return;
  }
  QUEST_DEVICE_PROFILE("linear_forward", stream, in_, out_);
  blas_.matmul_forward(y, x_, w_, N, in_, out_, stream);
}

void CudaLinearOp::forward_fused_tail(const bf16* x, const int8_t* xc, bf16* y, int64_t N,
                                      cudaStream_t stream) {
  shared_now_ = false;
  x_ = x_buf_;
  xcodes_valid_ = xc != nullptr;
  last_x_ = x;  // ln / g, written or not: what a sharing op's forward will name
  n_ = N;
  forward_product(xc, xc ? xsums() : nullptr, y, N, stream);
}

void CudaLinearOp::forward_rmsnorm(const float* res, const float* norm_w, float eps, float* rstd,
                                   bf16* ln, bool write_ln, bf16* y, int64_t N,
                                   cudaStream_t stream) {
  rmsnorm_impl(res, nullptr, nullptr, norm_w, eps, rstd, ln, write_ln, y, N, stream);
}

void CudaLinearOp::forward_add_rmsnorm(const float* res_in, const bf16* branch, float* res_out,
                                       const float* norm_w, float eps, float* rstd, bf16* ln,
                                       bool write_ln, bf16* y, int64_t N, cudaStream_t stream) {
  QUEST_QUANT_REQUIRE(branch && res_out, "CudaLinearOp::forward_add_rmsnorm needs branch and res_out");
  rmsnorm_impl(res_in, branch, res_out, norm_w, eps, rstd, ln, write_ln, y, N, stream);
}

void CudaLinearOp::rmsnorm_impl(const float* res, const bf16* branch, float* res_out,
                                const float* norm_w, float eps, float* rstd, bf16* ln,
                                bool write_ln, bf16* y, int64_t N, cudaStream_t stream) {
  check_forward(N, "forward_rmsnorm");
  if (fusable()) {
    int8_t* xc = lowbit_active() ? xcodes() : nullptr;
    bf16* lnw = write_ln ? ln : nullptr;
    bool done;
    if (branch) {
      QUEST_DEVICE_PROFILE("add_rmsnorm_quantize_input", stream);
      done = xq_->forward_add_rmsnorm(res, branch, res_out, norm_w, eps, rstd, lnw, x_buf_,
                                      input_codes(xc), N, stream);
    } else {
      QUEST_DEVICE_PROFILE("rmsnorm_quantize_input", stream);
      done = xq_->forward_rmsnorm(res, norm_w, eps, rstd, lnw, x_buf_, input_codes(xc), N, stream);
    }
    if (done) return forward_fused_tail(ln, xc, y, N, stream);
  }
  if (branch && fused_producers_) {
    // No fused quantizer (bf16 input, another family, or the kernel declined): the add still
    // folds into the plain RMSNorm kernel; ln is written (forward() reads it).
    QUEST_DEVICE_PROFILE("add_rmsnorm_forward", stream);
    add_rmsnorm_forward(res_out, ln, rstd, res, branch, norm_w, N, in_, eps, stream);
  } else {
    if (branch) {
      QUEST_DEVICE_PROFILE("residual_add", stream);
      add(res_out, res, branch, N * in_, stream);
      res = res_out;
    }
    QUEST_DEVICE_PROFILE("rmsnorm_forward", stream);
    rmsnorm_forward(ln, rstd, res, norm_w, N, in_, eps, stream);
  }
  forward(ln, y, N, stream);
}

void CudaLinearOp::forward_swiglu(const bf16* a, const bf16* b, bf16* g, bool write_g, bf16* y,
                                  int64_t N, cudaStream_t stream) {
  check_forward(N, "forward_swiglu");
  if (fusable()) {
    int8_t* xc = lowbit_active() ? xcodes() : nullptr;
    bool done;
    {
      QUEST_DEVICE_PROFILE("swiglu_quantize_input", stream);
      done = xq_->forward_swiglu(a, b, write_g ? g : nullptr, x_buf_, input_codes(xc), N, stream);
    }
    if (done) return forward_fused_tail(g, xc, y, N, stream);
  }
  {
    QUEST_DEVICE_PROFILE("swiglu_forward", stream);
    swiglu_forward(g, a, b, N * in_, stream);
  }
  forward(g, y, N, stream);
}

void CudaLinearOp::check_forward(int64_t N, const char* what) const {
  QUEST_QUANT_REQUIRE(w_ != nullptr, "CudaLinearOp::", what, " before prepare_weight");
  QUEST_QUANT_REQUIRE(N >= 0 && N <= max_rows_, "CudaLinearOp: ", N, " rows exceed the planned ",
                      max_rows_);
}

void CudaLinearOp::check_backward(int64_t N, bool has_dx) const {
  QUEST_QUANT_REQUIRE(x_ != nullptr && N == n_, "CudaLinearOp::backward(", N,
                      " rows) without its forward");
  QUEST_QUANT_REQUIRE(has_dx || !xq_ || !xq_->has_param(),
                      "CudaLinearOp::backward: the input quantizer's learned parameter needs dx");
}

void CudaLinearOp::input_gradient_product(const bf16* dy, bf16* dx, bool accumulate,
                                          cudaStream_t stream) {
  QUEST_DEVICE_PROFILE("linear_backward_dx", stream, in_, out_);
  Blas::BackwardFlags flags;
  flags.dx_accumulate = accumulate;
  blas_.matmul_backward(dx, nullptr, dy, x_, w_, n_, in_, out_, stream, flags);
}

void CudaLinearOp::mask_input_gradient(bf16* dx, cudaStream_t stream) {
  QUEST_DEVICE_PROFILE("mask_input_gradient", stream);
  if (DeviceQuantizer* q = input_quantizer())  // the source's mask when the input was shared
    q->backward(dx, n_, form(), stream);  // half: HT(M(dx)); full: quantizer's own backward
  else if (half_)
    hadamard_rows(dx, dx, n_, in_, stream);
}

CudaLinearOp::PendingInputMask CudaLinearOp::deferrable_input_mask() const {
  const DeviceQuantizer* q = input_quantizer();
  if (!half_ || (q && !q->fused_supported())) return {};
  return {true, q ? q->mask() : nullptr};
}

CudaLinearOp::PendingInputMask CudaLinearOp::backward(const bf16* dy, bf16* dx, float* dw,
                                                      int64_t N, cudaStream_t stream,
                                                      bool defer_mask) {
  check_backward(N, dx != nullptr);
  PendingInputMask owed;
  if (dx) {
    input_gradient_product(dy, dx, false, stream);
    if (defer_mask) owed = deferrable_input_mask();
    if (!owed.owed) mask_input_gradient(dx, stream);
  }
  weight_gradient(dy, dw, stream);
  return owed;
}

CudaLinearOp::PendingInputMask CudaLinearOp::backward_shared_input(
    CudaLinearOp& a, const bf16* dya, float* dwa, CudaLinearOp& b, const bf16* dyb, float* dwb,
    bf16* dx, bf16* scratch, int64_t N, cudaStream_t stream, bool defer_mask) {
  a.check_backward(N, true);
  b.check_backward(N, true);
  // One mask for both: b took a's quantized input (same xq, same mask), or neither quantizes its
  // input and both transform it alike. HT(M(p)) + HT(M(q)) = HT(M(p + q)).
  const bool shared = b.shared_now_ && b.share_src_ == &a;
  const bool plain = !a.xq_ && !b.xq_ && a.half_ == b.half_;
  if (a.in_ != b.in_ || !(shared || plain)) {
    a.backward(dya, dx, dwa, N, stream);
    b.backward(dyb, scratch, dwb, N, stream);
    QUEST_DEVICE_PROFILE("add", stream);
    add(dx, dx, scratch, N * a.in_, stream);
    return {};
  }
  a.input_gradient_product(dya, dx, false, stream);
  b.input_gradient_product(dyb, dx, true, stream);
  PendingInputMask owed;
  if (defer_mask) owed = a.deferrable_input_mask();
  if (!owed.owed) a.mask_input_gradient(dx, stream);
  a.weight_gradient(dya, dwa, stream);
  b.weight_gradient(dyb, dwb, stream);
  return owed;
}

void CudaLinearOp::backward_swiglu(const bf16* dy, float* dw, const bf16* a, const bf16* b,
                                   bf16* da, bf16* db, bf16* dg, int64_t N, cudaStream_t stream) {
  check_backward(N, true);
  const DeviceQuantizer* q = input_quantizer();
  input_gradient_product(dy, dg, false, stream);
  bool fused = false;
  if (half_ && (!q || q->fused_supported())) {
    QUEST_DEVICE_PROFILE("mask_swiglu_backward", stream);
    fused = mask_ht_swiglu_backward(da, db, dg, q ? q->mask() : nullptr, a, b, N, in_, stream);
  }
  if (!fused) {
    mask_input_gradient(dg, stream);
    QUEST_DEVICE_PROFILE("swiglu_backward", stream);
    swiglu_backward(da, db, dg, a, b, N * in_, stream);
  }
  weight_gradient(dy, dw, stream);
}

void CudaLinearOp::weight_gradient(const bf16* dy, float* dw, cudaStream_t stream) {
  if (!dw) return;
  const int64_t N = n_;
  Blas* blas = &blas_;
  cudaStream_t s = stream;
  if (side_) {  // after the work so far (dY is complete); the caller's stream goes on
    side_->follow(stream);
    blas = &side_->blas();
    s = side_->get();
  }
  if (!wq_ && !half_) {  // dW accumulates straight into the caller's gradient
    QUEST_DEVICE_PROFILE("linear_backward_dw", s, in_, out_);
    blas->matmul_backward(nullptr, dw, dy, x_, w_, N, in_, out_, s);
  } else {
    {
      QUEST_DEVICE_PROFILE("linear_backward_dw", s, in_, out_);
      Blas::BackwardFlags flags;
      flags.dw_overwrite = true;  // dw_buf_ = dY^T . X, no zeroing pass
      blas->matmul_backward(nullptr, dw_buf_, dy, x_, w_, N, in_, out_, s, flags);
    }
    QUEST_DEVICE_PROFILE("mask_weight_gradient", s);
    if (wq_) {
      wq_->backward_accumulate(dw, dw_buf_, out_, form(), s);  // dw += [HT] M [HT] dW
    } else {
      MaskBackward mb;
      mb.ht_after = true;  // half form, unquantized weight: dw += HT(dW_h)
      mask_backward_accumulate(dw, dw_buf_, out_, in_, mb, s);
    }
  }
  if (side_) {  // the caller's stream must not overwrite these before the side has read them
    side_->reading(dy);
    side_->reading(x_);
  }
}

std::vector<CudaLinearOp::LearnedParam> CudaLinearOp::learned_params() {
  std::vector<LearnedParam> out;
  auto add = [&](DeviceQuantizer* q, const char* role) {
    if (q && q->has_param())
      out.push_back({std::string(role) + "." + q->param_name(), q->param(), q->param_grad()});
  };
  add(wq_.get(), "weight");
  add(xq_.get(), "input");
  return out;
}

}  // namespace quest::cuda
