#include "quant/linear_op.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "ops/cpu_ops.h"
#include "quant/factory.h"
#include "quant/hadamard.h"

namespace quest {

LinearOp::LinearOp(int64_t in, int64_t out, int64_t max_rows)
    : LinearOp(in, out, max_rows, QuantConfig::none()) {}

LinearOp::LinearOp(int64_t in, int64_t out, int64_t max_rows, const QuantConfig& quant)
    : in_(in), out_(out), max_rows_(max_rows) {
  QUEST_CHECK(in > 0 && out > 0 && max_rows > 0, "LinearOp: bad shape in={} out={} max_rows={}", in,
              out, max_rows);
  set_quant(quant);
}
LinearOp::~LinearOp() = default;
LinearOp::LinearOp(LinearOp&&) noexcept = default;
LinearOp& LinearOp::operator=(LinearOp&&) noexcept = default;

void LinearOp::set_quant(const QuantConfig& quant) {
  quant.validate();
  wq_ = quant.weight.is_none() ? nullptr : make_quantizer(quant.weight, QuantRole::Weight, in_);
  xq_ = quant.input.is_none() ? nullptr : make_quantizer(quant.input, QuantRole::Input, in_);
  quant_ = quant;
  // Half form: only when every quantizer present works in the Hadamard domain (a non-Hadamard
  // quantizer must see the original x or W, so those layers run the full form).
  const bool w_ok = !wq_ || wq_->uses_hadamard(), x_ok = !xq_ || xq_->uses_hadamard();
  half_ = quant.form == HadamardForm::Half && quant.uses_hadamard() && w_ok && x_ok;

  const bool own_w = wq_ || half_, own_x = xq_ || half_;
  w_buf_.assign(own_w ? size_t(out_ * in_) : 0, 0.0f);
  dw_buf_.assign(own_w ? size_t(out_ * in_) : 0, 0.0f);
  x_buf_.assign(own_x ? size_t(max_rows_ * in_) : 0, 0.0f);
  w_buf_.shrink_to_fit(), dw_buf_.shrink_to_fit(), x_buf_.shrink_to_fit();
  if (wq_) wq_->reserve(out_, in_);
  if (xq_) xq_->reserve(max_rows_, in_);
  w_ = x_ = nullptr;
  n_ = 0;
  product_weight_fixed_ = false;
}

TensorQuantizer* LinearOp::domain_quantizer(const std::unique_ptr<TensorQuantizer>& q) const {
  if (!q) return nullptr;
  return half_ ? q->hadamard_inner() : q.get();
}

void LinearOp::prepare_weight(const float* w) {
  product_weight_fixed_ = false;
  if (!wq_ && !half_) {
    w_ = w;
    return;
  }
  float* buf = w_buf_.data();
  if (half_) {
    std::memcpy(buf, w, sizeof(float) * size_t(out_ * in_));
    hadamard_transform_rows(buf, out_, in_);
    if (wq_) domain_quantizer(wq_)->forward(buf, buf, out_, in_);
  } else {
    wq_->forward(w, buf, out_, in_);
  }
  w_ = buf;
}

void LinearOp::set_product_weight(const float* w) {
  if (w_buf_.empty()) w_buf_.resize(size_t(out_ * in_));  // a plain layer owns no copy otherwise
  std::memcpy(w_buf_.data(), w, sizeof(float) * size_t(out_ * in_));
  w_ = w_buf_.data();
  product_weight_fixed_ = true;
}

void LinearOp::forward(const float* x, float* y, int64_t N) {
  QUEST_CHECK(w_ != nullptr, "LinearOp::forward before prepare_weight");
  QUEST_CHECK(N <= max_rows_, "LinearOp: {} rows exceed the planned {}", N, max_rows_);
  if (half_) {
    float* buf = x_buf_.data();
    std::memcpy(buf, x, sizeof(float) * size_t(N * in_));
    hadamard_transform_rows(buf, N, in_);
    if (xq_) domain_quantizer(xq_)->forward(buf, buf, N, in_);
    x_ = buf;
  } else if (xq_) {
    xq_->forward(x, x_buf_.data(), N, in_);
    x_ = x_buf_.data();
  } else {
    x_ = x;
  }
  n_ = N;
  cpu::matmul_forward(y, x_, w_, N, in_, out_);
}

void LinearOp::backward(const float* dy, float* dx, float* dw, int64_t N) {
  QUEST_CHECK(x_ != nullptr && N == n_, "LinearOp::backward({} rows) without its forward", N);
  QUEST_CHECK(dx || !xq_ || xq_->params().empty(),
              "LinearOp::backward: the input quantizer's learned parameter needs dx");
  if (dx) {
    cpu::matmul_backward(dx, nullptr, dy, x_, w_, N, in_, out_);
    if (TensorQuantizer* q = domain_quantizer(xq_)) q->backward(dx, N, in_);
    if (half_) hadamard_transform_rows(dx, N, in_);
  }
  if (!dw) return;
  if (!wq_ && !half_) {  // dW accumulates straight into the caller's gradient
    cpu::matmul_backward(nullptr, dw, dy, x_, w_, N, in_, out_);
    return;
  }
  float* buf = dw_buf_.data();
  const int64_t n = out_ * in_;
  std::fill_n(buf, n, 0.0f);
  cpu::matmul_backward(nullptr, buf, dy, x_, w_, N, in_, out_);
  if (TensorQuantizer* q = domain_quantizer(wq_)) q->backward(buf, out_, in_);
  if (half_) hadamard_transform_rows(buf, out_, in_);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) dw[i] += buf[i];
}

std::vector<LinearOp::LearnedParam> LinearOp::learned_params() {
  std::vector<LearnedParam> out;
  auto add = [&](TensorQuantizer* q, const char* role) {
    if (!q) return;
    const auto names = q->param_names();
    const auto values = q->params(), grads = q->param_grads();
    for (size_t i = 0; i < values.size(); ++i)
      out.push_back({std::string(role) + "." + names[i], values.subspan(i, 1), grads.subspan(i, 1)});
  };
  add(wq_.get(), "weight");
  add(xq_.get(), "input");
  return out;
}

const MaskBits* LinearOp::weight_mask() const { return wq_ ? wq_->mask() : nullptr; }
const MaskBits* LinearOp::input_mask() const { return xq_ ? xq_->mask() : nullptr; }
double LinearOp::weight_masked_fraction() const { return wq_ ? wq_->masked_fraction() : 0.0; }
double LinearOp::input_masked_fraction() const { return xq_ ? xq_->masked_fraction() : 0.0; }

}  // namespace quest
