// LSQ: learned step size (QUEST_SPEC.md section 4), with the "+1/2" shifted integer grid.
#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "quant/quantizers.h"

namespace quest {

LsqQuantizer::LsqQuantizer(int bits, std::string name) : bits_(bits), name_(std::move(name)) {}

void LsqQuantizer::reserve(int64_t rows, int64_t cols) {
  if (dstep_.size() < size_t(rows * cols)) dstep_.resize(size_t(rows * cols));
  if (row_sum_.size() < size_t(rows)) row_sum_.resize(size_t(rows));
  mask_.reserve(rows, cols);
}

void LsqQuantizer::forward(const float* x, float* xq, int64_t rows, int64_t cols) {
  reserve(rows, cols);
  mask_.reset(rows, cols);
  const float qmin = -float(1 << (bits_ - 1)), qmax = float((1 << (bits_ - 1)) - 1);
  if (step_ == 0.0f) {  // init from the first data: 2 * mean|x| / sqrt(qmax)
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      double s = 0.0;
      for (int64_t i = 0; i < cols; ++i) s += std::fabs(x[r * cols + i]);
      row_sum_[r] = s;
    }
    double total = 0.0;
    for (int64_t r = 0; r < rows; ++r) total += row_sum_[r];
    const double mean_abs = total / double(rows * cols);
    step_ = float(2.0 * mean_abs / std::sqrt(double(qmax)));
    if (!(step_ > 0.0f)) step_ = 1e-8f;  // all-zero data: any positive step works
  }
  QUEST_CHECK(std::isfinite(step_), "{}: the learned step is not finite ({})", name_, step_);
  // The grid uses |s|: AdamW moves a scalar by about lr per step, which can carry a small weight
  // step (~1e-3 at init std 0.02) through zero; the quantizer is symmetric in the sign of s, and
  // backward() gives s the gradient of |s|, so training goes on through the crossing.
  sign_ = step_ < 0.0f ? -1.0f : 1.0f;
  const float s = std::max(std::fabs(step_), kMinStep), inv = 1.0f / s;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    uint64_t* m = mask_.row(r);
    for (int64_t i = 0; i < cols; ++i) {
      const int64_t k = r * cols + i;
      const float xs = x[k] * inv;
      const float u = xs - 0.5f;
      float q, d;
      if (u < qmin) {
        q = qmin, d = qmin + 0.5f;
        MaskBits::set(m, i);
      } else if (u > qmax) {
        q = qmax, d = qmax + 0.5f;
        MaskBits::set(m, i);
      } else {
        q = std::nearbyint(u);  // half to even
        d = q + 0.5f - xs;
      }
      dstep_[k] = d;
      xq[k] = (q + 0.5f) * s;
    }
  }
}

void LsqQuantizer::backward(float* grad, int64_t rows, int64_t cols) {
  const double qmax = double((1 << (bits_ - 1)) - 1);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    double s = 0.0;
    for (int64_t i = 0; i < cols; ++i) s += double(grad[r * cols + i]) * dstep_[r * cols + i];
    row_sum_[r] = s;
  }
  double total = 0.0;
  for (int64_t r = 0; r < rows; ++r) total += row_sum_[r];
  step_grad_ += sign_ * float(total / std::sqrt(double(rows * cols) * qmax));  // LSQ gradient scale
  mask_.apply(grad);
}

}  // namespace quest
