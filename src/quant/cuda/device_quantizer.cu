// DeviceQuantizer: the device counterpart of make_quantizer() (factory.cpp) and the quantizer
// classes of quantizers.h. Owns the device state of one tensor role; dispatches to the kernels of
// row_quantize.cu (grid, fp4, sparse 4:8), lsq_pact.cu and hadamard.cu (masks, transforms).
//
// Forms (QuantForm), for a Hadamard quantizer:
//   Full: forward xq = HT(Q(HT(x)))  backward g <- HT(M(HT(g)))   (HadamardQuantizer)
//   Half: forward xq = Q(HT(x))      backward g <- HT(M(g))       (LinearOp's half form: the
//         op transforms x once, quantizes with the inner quantizer, and transforms dx back)
// Without the transform: forward xq = Q(x), backward g <- M(g); Half is an error.
#include "core/error.h"
#include "ops/cuda_ops.h"
#include "quant/alpha.h"
#include "quant/cuda/cuda_quant.h"
#include "quant/cuda/kernels.h"

namespace quest::cuda {

using qdetail::device_alloc;

DeviceQuantizer::DeviceQuantizer(const QuantSpec& spec, QuantRole role, int64_t max_rows,
                                 int64_t cols)
    : spec_(spec), max_rows_(max_rows), cols_(cols), wpr_(mask_words_per_row(cols)) {
  spec.validate_for(role);
  const std::string name = spec.to_string();
  QUEST_QUANT_REQUIRE(!spec.is_none(),
                      "CUDA quantizer: 'none' has no quantizer (keep the tensor as is)");
  QUEST_QUANT_REQUIRE(max_rows > 0 && cols > 0, "CUDA quantizer '", name, "': bad shape [",
                      max_rows, ", ", cols, "]");
  QUEST_QUANT_REQUIRE(
      !spec.hadamard || cols % 128 == 0, "quantizer '", name,
      "': the Hadamard transform needs K (in_features) to be a multiple of 128, got ", cols);
  switch (spec.kind) {
    case QuantKind::Ste:
    case QuantKind::Clip:
    case QuantKind::Trust:
      family_ = Family::Grid;
      break;
    case QuantKind::Fp4:
      family_ = Family::Fp4;
      break;
    case QuantKind::Sparse48:
      family_ = Family::Sparse48;
      break;
    case QuantKind::Lsq:
      family_ = Family::Lsq;
      break;
    case QuantKind::Pact:
      family_ = Family::Pact;
      break;
    default:
      qdetail::raise("CUDA quantizer '", name, "': unsupported kind");
  }
  QUEST_QUANT_REQUIRE(family_ != Family::Sparse48 || cols % 8 == 0, "quantizer '", name,
                      "': 4:8 sparsity needs K (in_features) to be a multiple of 8, got ", cols);
  const bool learned = family_ == Family::Lsq || family_ == Family::Pact;
  QUEST_QUANT_REQUIRE(learned || cols <= qdetail::row_quantize_max_cols(), "CUDA quantizer '", name,
                      "': rows of ", cols, " entries exceed the kernel's limit ",
                      qdetail::row_quantize_max_cols());
  rule_ = spec.mask_rule();
  masks_ = learned || rule_.type != MaskRule::Type::None;

  try {
    if (masks_) mask_ = device_alloc<uint64_t>(max_rows * wpr_);
    if (family_ == Family::Pact) negative_ = device_alloc<uint64_t>(max_rows * wpr_);
    step_ = device_alloc<float>(max_rows);
    if (learned) {
      row_sum_ = device_alloc<double>(max_rows);
      param_ = device_alloc<float>(3);
      const float init[3] = {0.0f, 0.0f, 1.0f};  // uninitialized value, zero gradient, sign +1
      QUEST_CUDA_CHECK(cudaMemcpy(param_, init, sizeof(init), cudaMemcpyHostToDevice));
    }
    if (family_ == Family::Lsq) dstep_ = device_alloc<float>(max_rows * cols);
  } catch (...) {
    cudaFree(mask_), cudaFree(negative_), cudaFree(step_), cudaFree(row_sum_), cudaFree(param_),
        cudaFree(dstep_);
    throw;
  }
}

int64_t DeviceQuantizer::device_bytes(const QuantSpec& spec, int64_t max_rows, int64_t cols) {
  if (spec.is_none()) return 0;
  // The constructor's buffers: mask bits (with a masking rule or a learned parameter), PACT's
  // sign bits, the row steps, a learned parameter's row sums and value, LSQ's dxq/ds per entry.
  const bool lsq = spec.kind == QuantKind::Lsq, pact = spec.kind == QuantKind::Pact;
  const int64_t mask = max_rows * mask_words_per_row(cols) * int64_t(sizeof(uint64_t));
  int64_t bytes = max_rows * int64_t(sizeof(float));
  if (lsq || pact || spec.mask_rule().type != MaskRule::Type::None) bytes += mask;
  if (pact) bytes += mask;
  if (lsq || pact) bytes += max_rows * int64_t(sizeof(double)) + 3 * int64_t(sizeof(float));
  if (lsq) bytes += max_rows * cols * int64_t(sizeof(float));
  return bytes;
}

DeviceQuantizer::~DeviceQuantizer() {
  // Errors are ignored here (a destructor must not throw; a sticky error surfaces elsewhere).
  cudaFree(mask_);
  cudaFree(negative_);
  cudaFree(step_);
  cudaFree(row_sum_);
  cudaFree(param_);
  cudaFree(dstep_);
}

std::string DeviceQuantizer::param_name() const {
  return family_ == Family::Lsq ? "lsq_step" : family_ == Family::Pact ? "pact_alpha" : "";
}

float DeviceQuantizer::read_param() const {
  QUEST_QUANT_REQUIRE(param_, "CUDA quantizer '", spec_.to_string(), "' has no learned parameter");
  float v = 0.0f;
  QUEST_CUDA_CHECK(cudaMemcpy(&v, param_, sizeof(float), cudaMemcpyDeviceToHost));
  return v;
}

float DeviceQuantizer::read_param_grad() const {
  QUEST_QUANT_REQUIRE(param_, "CUDA quantizer '", spec_.to_string(), "' has no learned parameter");
  float v = 0.0f;
  QUEST_CUDA_CHECK(cudaMemcpy(&v, param_ + 1, sizeof(float), cudaMemcpyDeviceToHost));
  return v;
}

void DeviceQuantizer::write_param(float value, float grad) {
  QUEST_QUANT_REQUIRE(param_, "CUDA quantizer '", spec_.to_string(), "' has no learned parameter");
  const float v[2] = {value, grad};
  QUEST_CUDA_CHECK(cudaMemcpy(param_, v, sizeof(v), cudaMemcpyHostToDevice));
}

void DeviceQuantizer::check_call(int64_t rows, QuantForm form, const char* what) const {
  QUEST_QUANT_REQUIRE(rows >= 0 && rows <= max_rows_, "CUDA quantizer '", spec_.to_string(),
                      "': ", what, " of ", rows, " rows (planned ", max_rows_, ")");
  QUEST_QUANT_REQUIRE(form == QuantForm::Full || spec_.hadamard, "CUDA quantizer '",
                      spec_.to_string(), "': the half form needs a Hadamard quantizer");
}

void DeviceQuantizer::check_codes(CodesOut codes, QuantForm form) const {
  QUEST_QUANT_REQUIRE(!codes.codes || (codes_supported() && form == QuantForm::Half),
                      "CUDA quantizer '", spec_.to_string(), "': no integer codes (",
                      codes_supported() ? "the half form only"
                                        : "grid family with the transform, <= 7 bits", ")");
  QUEST_QUANT_REQUIRE(!codes.sums || codes.codes, "CUDA quantizer '", spec_.to_string(),
                      "': code sums without codes");
}

void DeviceQuantizer::row_args(qdetail::RowQuantArgs& a, int64_t rows, QuantForm form,
                               CodesOut codes) const {
  a.rows = rows, a.cols = cols_;
  a.bits = family_ == Family::Fp4 ? 4 : spec_.bits;
  a.unit = family_ == Family::Fp4 ? kFp4Unit : kAlpha[spec_.bits];
  switch (rule_.type) {
    case MaskRule::Type::None:
      a.rule = 0;
      break;
    case MaskRule::Type::Clip:
      a.rule = 1;
      break;
    case MaskRule::Type::Trust:
      a.rule = 2;
      break;
  }
  a.clip_factor = float(rule_.factor);  // GridQuantizer: float(factor) * scale
  a.trust = rule_.factor;               // float(factor * rms)
  a.ht_in = spec_.hadamard;
  a.ht_out = spec_.hadamard && form == QuantForm::Full;
  a.mask = mask_;
  a.step = step_;
  a.codes = codes.codes;
  a.code_sums = codes.sums;
}

template <class TIn, class TOut>
void DeviceQuantizer::forward_impl(const TIn* x, TOut* xq, int64_t rows, QuantForm form,
                                   cudaStream_t stream, CodesOut codes) {
  check_call(rows, form, "forward");
  check_codes(codes, form);
  rows_ = rows;
  form_ = form;
  if (family_ == Family::Lsq || family_ == Family::Pact) {
    qdetail::LearnedArgs a;
    a.lsq = family_ == Family::Lsq;
    a.rows = rows, a.cols = cols_, a.bits = spec_.bits;
    a.alpha = kAlpha[spec_.bits];
    a.param = param_, a.mask = mask_, a.negative = negative_, a.dstep = dstep_, a.step = step_;
    a.row_sum = row_sum_;
    qdetail::launch_learned_forward(x, xq, a, stream);
    return;
  }
  qdetail::RowQuantArgs a;
  row_args(a, rows, form, codes);
  const qdetail::RowFamily f = family_ == Family::Grid  ? qdetail::RowFamily::Grid
                               : family_ == Family::Fp4 ? qdetail::RowFamily::Fp4
                                                        : qdetail::RowFamily::Sparse48;
  qdetail::launch_row_quantize(f, x, xq, a, stream);
}

bool DeviceQuantizer::fused_supported() const {
  return family_ == Family::Grid && spec_.hadamard;  // the grid family has no learned parameter
}

qdetail::RowQuantArgs DeviceQuantizer::fused_args(int64_t rows, CodesOut codes,
                                                  const char* what) const {
  check_call(rows, QuantForm::Half, what);
  check_codes(codes, QuantForm::Half);
  QUEST_QUANT_REQUIRE(fused_supported(), "CUDA quantizer '", spec_.to_string(),
                      "': no producer-fused forward (grid family with the transform only)");
  qdetail::RowQuantArgs a;
  row_args(a, rows, QuantForm::Half, codes);
  return a;
}

bool DeviceQuantizer::rmsnorm_impl(const float* x, const bf16* branch, float* res_out,
                                   const float* w, float eps, float* rstd, bf16* ln, bf16* xq,
                                   CodesOut codes, int64_t rows, cudaStream_t stream) {
  const qdetail::RowQuantArgs a = fused_args(rows, codes, "forward_rmsnorm");
  if (!qdetail::launch_rmsnorm_ht_grid_rows(x, branch, res_out, w, eps, rstd, ln, xq, a, stream))
    return false;
  rows_ = rows;
  form_ = QuantForm::Half;
  return true;
}

bool DeviceQuantizer::forward_rmsnorm(const float* x, const float* w, float eps, float* rstd,
                                      bf16* ln, bf16* xq, CodesOut codes, int64_t rows,
                                      cudaStream_t stream) {
  return rmsnorm_impl(x, nullptr, nullptr, w, eps, rstd, ln, xq, codes, rows, stream);
}

bool DeviceQuantizer::forward_add_rmsnorm(const float* res_in, const bf16* branch, float* res_out,
                                          const float* w, float eps, float* rstd, bf16* ln,
                                          bf16* xq, CodesOut codes, int64_t rows,
                                          cudaStream_t stream) {
  QUEST_QUANT_REQUIRE(branch && res_out, "CUDA quantizer: forward_add_rmsnorm needs branch and res_out");
  return rmsnorm_impl(res_in, branch, res_out, w, eps, rstd, ln, xq, codes, rows, stream);
}

bool DeviceQuantizer::forward_swiglu(const bf16* a_in, const bf16* b_in, bf16* g, bf16* xq,
                                     CodesOut codes, int64_t rows, cudaStream_t stream) {
  const qdetail::RowQuantArgs a = fused_args(rows, codes, "forward_swiglu");
  if (!qdetail::launch_swiglu_ht_grid_rows(a_in, b_in, g, xq, a, stream)) return false;
  rows_ = rows;
  form_ = QuantForm::Half;
  return true;
}

template <class TS, class TD>
void DeviceQuantizer::backward_impl(const TS* grad, TD* dst, bool accumulate, int64_t rows,
                                    QuantForm form, cudaStream_t stream) {
  check_call(rows, form, "backward");
  QUEST_QUANT_REQUIRE(rows == rows_ && form == form_, "CUDA quantizer '", spec_.to_string(),
                      "': backward(", rows, " rows) does not match the last forward (", rows_,
                      " rows)");
  if (family_ == Family::Lsq || family_ == Family::Pact) {
    qdetail::LearnedArgs a;
    a.lsq = family_ == Family::Lsq;
    a.rows = rows, a.cols = cols_, a.bits = spec_.bits;
    a.param = param_, a.mask = mask_, a.negative = negative_, a.dstep = dstep_, a.step = step_;
    a.row_sum = row_sum_;
    qdetail::launch_learned_backward(grad, dst, accumulate, a, stream);
    return;
  }
  MaskBackward mb;
  mb.mask = mask();
  mb.ht_before = spec_.hadamard && form == QuantForm::Full;
  mb.ht_after = spec_.hadamard;
  qdetail::launch_mask_backward(grad, dst, accumulate, rows, cols_, mb, stream);
}

void DeviceQuantizer::forward(const float* x, float* xq, int64_t rows, QuantForm form,
                              cudaStream_t stream) {
  forward_impl(x, xq, rows, form, stream);
}
void DeviceQuantizer::forward(const float* x, bf16* xq, int64_t rows, QuantForm form,
                              cudaStream_t stream) {
  forward_impl(x, xq, rows, form, stream);
}
void DeviceQuantizer::forward(const bf16* x, bf16* xq, int64_t rows, QuantForm form,
                              cudaStream_t stream) {
  forward_impl(x, xq, rows, form, stream);
}
void DeviceQuantizer::forward(const bf16* x, float* xq, int64_t rows, QuantForm form,
                              cudaStream_t stream) {
  forward_impl(x, xq, rows, form, stream);
}

bool DeviceQuantizer::codes_supported() const {
  return family_ == Family::Grid && spec_.hadamard && spec_.bits <= 7 && cols_ <= 16384;
}
void DeviceQuantizer::forward_with_codes(const bf16* x, bf16* xq, CodesOut codes, int64_t rows,
                                         cudaStream_t stream) {
  forward_impl(x, xq, rows, QuantForm::Half, stream, codes);
}
void DeviceQuantizer::forward_with_codes(const float* x, bf16* xq, CodesOut codes, int64_t rows,
                                         cudaStream_t stream) {
  forward_impl(x, xq, rows, QuantForm::Half, stream, codes);
}

void DeviceQuantizer::backward(float* grad, int64_t rows, QuantForm form, cudaStream_t stream) {
  backward_impl(grad, grad, false, rows, form, stream);
}
void DeviceQuantizer::backward(bf16* grad, int64_t rows, QuantForm form, cudaStream_t stream) {
  backward_impl(grad, grad, false, rows, form, stream);
}
void DeviceQuantizer::backward_accumulate(float* dst, const float* grad, int64_t rows,
                                          QuantForm form, cudaStream_t stream) {
  QUEST_QUANT_REQUIRE(dst != grad, "CUDA quantizer: backward_accumulate needs dst != grad");
  backward_impl(grad, dst, true, rows, form, stream);
}

}  // namespace quest::cuda
