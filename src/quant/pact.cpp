// PACT as published (gradient passes for unclipped entries), symmetric: QUEST_SPEC.md section 4.
#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "quant/quantizers.h"

namespace quest {

PactQuantizer::PactQuantizer(int bits, std::string name) : bits_(bits), name_(std::move(name)) {}

void PactQuantizer::reserve(int64_t rows, int64_t cols) {
  if (row_sum_.size() < size_t(rows)) row_sum_.resize(size_t(rows));
  mask_.reserve(rows, cols);
  negative_.reserve(rows, cols);
}

void PactQuantizer::forward(const float* x, float* xq, int64_t rows, int64_t cols) {
  reserve(rows, cols);
  mask_.reset(rows, cols);
  negative_.reset(rows, cols);
  if (alpha_ == 0.0f) {  // init from the first data: the Gaussian MSE-optimal clip ALPHA[b] * rms
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      double s = 0.0;
      for (int64_t i = 0; i < cols; ++i) s += double(x[r * cols + i]) * x[r * cols + i];
      row_sum_[r] = s;
    }
    double total = 0.0;
    for (int64_t r = 0; r < rows; ++r) total += row_sum_[r];
    alpha_ = float(kAlpha[bits_] * std::sqrt(total / double(rows * cols)));
    if (!(alpha_ > 0.0f)) alpha_ = 1e-8f;
  }
  QUEST_CHECK(std::isfinite(alpha_), "{}: the learned clip is not finite ({})", name_, alpha_);
  // The clip is |alpha| (see LsqQuantizer: the optimizer may carry alpha through zero).
  sign_ = alpha_ < 0.0f ? -1.0f : 1.0f;
  const grid::Grid g = grid::make(bits_, std::max(std::fabs(alpha_), 1e-8f));
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    uint64_t* m = mask_.row(r);
    uint64_t* n = negative_.row(r);
    for (int64_t i = 0; i < cols; ++i) {
      const int64_t k = r * cols + i;
      const float v = x[k];
      if (!(std::fabs(v) < g.scale)) {
        MaskBits::set(m, i);
        if (v < 0.0f) MaskBits::set(n, i);
      }
      xq[k] = grid::quantize(v, g);
    }
  }
}

void PactQuantizer::backward(float* grad, int64_t rows, int64_t cols) {
  // d clip(x, -alpha, alpha) / d alpha = sign(x) where |x| >= alpha, else 0 (STE through rounding).
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const uint64_t* m = mask_.row(r);
    const uint64_t* n = negative_.row(r);
    double s = 0.0;
    for (int64_t w = 0; w < mask_.words_per_row(); ++w) {
      for (uint64_t bits = m[w]; bits; bits &= bits - 1) {
        const int b = std::countr_zero(bits);
        const double g = grad[r * cols + w * 64 + b];
        s += ((n[w] >> b) & 1) ? -g : g;
      }
    }
    row_sum_[r] = s;
  }
  double total = 0.0;
  for (int64_t r = 0; r < rows; ++r) total += row_sum_[r];
  alpha_grad_ += sign_ * float(total);
  mask_.apply(grad);
}

}  // namespace quest
