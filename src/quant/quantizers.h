#pragma once
// The concrete quantizers of QUEST_SPEC.md section 4. Build them with make_quantizer() (factory.h),
// which validates the spec; the constructors trust their arguments.
//
// All statistics are row-wise (rms over the whole row) except LSQ and PACT (one learned value per
// tensor). None of them applies the Hadamard transform itself: HadamardQuantizer wraps any of them
// with HT before and HT^T (= HT) after, which is the "full" form.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "quant/grid.h"
#include "quant/mask_bits.h"
#include "quant/quant_spec.h"
#include "quant/quantizer.h"

namespace quest {

// Identity (forward copies when x and xq differ; backward passes the gradient unchanged).
class IdentityQuantizer final : public TensorQuantizer {
 public:
  void forward(const float* x, float* xq, int64_t rows, int64_t cols) override;
  void backward(float*, int64_t, int64_t) override {}
  std::string describe() const override { return "none"; }
};

// ste, clip(c), trust: the centered 2^b-level grid with clip ALPHA[b] * rms (section 3), and the
// backward given by `rule`.
class GridQuantizer final : public TensorQuantizer {
 public:
  GridQuantizer(int bits, MaskRule rule, std::string name);
  void reserve(int64_t rows, int64_t cols) override { mask_.reserve(rows, cols); }
  void forward(const float* x, float* xq, int64_t rows, int64_t cols) override;
  void backward(float* grad, int64_t rows, int64_t cols) override;
  const MaskBits* mask() const override { return rule_.type == MaskRule::Type::None ? nullptr : &mask_; }
  std::string describe() const override { return name_; }

 private:
  int bits_;
  MaskRule rule_;
  std::string name_;
  MaskBits mask_;
};

// e2m1: nearest of kFp4Unit * rms * {0, +-0.5, ..., +-6} (ties to the even mantissa), trust mask
// |xq - x| <= trust * rms.
class Fp4Quantizer final : public TensorQuantizer {
 public:
  Fp4Quantizer(double trust, std::string name);
  void reserve(int64_t rows, int64_t cols) override { mask_.reserve(rows, cols); }
  void forward(const float* x, float* xq, int64_t rows, int64_t cols) override;
  void backward(float* grad, int64_t rows, int64_t cols) override { mask_.apply(grad); }
  const MaskBits* mask() const override { return &mask_; }
  std::string describe() const override { return name_; }

  // The e2m1 rounding of |v| in grid units (v >= 0): the nearest level, ties to the even mantissa.
  static float round_e2m1(float v);

 private:
  double trust_;
  std::string name_;
  MaskBits mask_;
};

// 4:8 pair sparsity + b-bit grid (weights): each group of 8 = 4 adjacent pairs; the 2 pairs of
// smallest L2 norm are zeroed, the rest take the grid of the dense row's rms; trust mask against the
// sparsified xq. Needs cols % 8 == 0.
class Sparse48Quantizer final : public TensorQuantizer {
 public:
  Sparse48Quantizer(int bits, double trust, std::string name);
  void reserve(int64_t rows, int64_t cols) override { mask_.reserve(rows, cols); }
  void forward(const float* x, float* xq, int64_t rows, int64_t cols) override;
  void backward(float* grad, int64_t rows, int64_t cols) override { mask_.apply(grad); }
  const MaskBits* mask() const override { return &mask_; }
  std::string describe() const override { return name_; }

 private:
  int bits_;
  double trust_;
  std::string name_;
  MaskBits mask_;
};

// LSQ (Esser et al.): one learned step s per tensor, levels (q + 1/2) * s with
// q in [-2^(b-1), 2^(b-1) - 1] (round half to even); s initialized on the first forward to
// 2 * mean|x| / sqrt(qmax), qmax = 2^(b-1) - 1. Backward: x gets the gradient where
// x / s - 1/2 lies in [qmin, qmax] (STE with clip); s gets sum(g * dxq/ds) scaled by
// 1 / sqrt(numel * qmax), with dxq/ds = q + 1/2 - x/s inside and qmin/qmax + 1/2 when clipped.
// The grid uses |s| (the optimizer may carry s through zero) and s gets the gradient of |s|.
class LsqQuantizer final : public TensorQuantizer {
 public:
  LsqQuantizer(int bits, std::string name);
  void reserve(int64_t rows, int64_t cols) override;
  void forward(const float* x, float* xq, int64_t rows, int64_t cols) override;
  void backward(float* grad, int64_t rows, int64_t cols) override;
  std::span<float> params() override { return {&step_, 1}; }
  std::span<float> param_grads() override { return {&step_grad_, 1}; }
  std::vector<std::string> param_names() const override { return {"lsq_step"}; }
  const MaskBits* mask() const override { return &mask_; }
  std::string describe() const override { return name_; }

 private:
  int bits_;
  std::string name_;
  static constexpr float kMinStep = 1e-8f;
  float step_ = 0.0f, step_grad_ = 0.0f;
  float sign_ = 1.0f;            // sign of step_ at the last forward (the grid uses |step_|)
  std::vector<float> dstep_;     // dxq/ds per entry of the last forward
  std::vector<double> row_sum_;  // per-row partial sums (a deterministic reduction)
  MaskBits mask_;
};

// PACT (Choi et al.), symmetric: one learned clip alpha per tensor, the centered 2^b-level grid on
// [-alpha, alpha] (extreme levels +-alpha). alpha is initialized on the first forward to
// ALPHA[b] * rms(tensor). Backward: x gets the gradient where |x| < alpha; alpha gets
// sum over clipped entries (|x| >= alpha) of g * sign(x). The clip is |alpha|, as for LSQ's step.
class PactQuantizer final : public TensorQuantizer {
 public:
  PactQuantizer(int bits, std::string name);
  void reserve(int64_t rows, int64_t cols) override;
  void forward(const float* x, float* xq, int64_t rows, int64_t cols) override;
  void backward(float* grad, int64_t rows, int64_t cols) override;
  std::span<float> params() override { return {&alpha_, 1}; }
  std::span<float> param_grads() override { return {&alpha_grad_, 1}; }
  std::vector<std::string> param_names() const override { return {"pact_alpha"}; }
  const MaskBits* mask() const override { return &mask_; }
  std::string describe() const override { return name_; }

 private:
  int bits_;
  std::string name_;
  float alpha_ = 0.0f, alpha_grad_ = 0.0f;
  float sign_ = 1.0f;  // sign of alpha_ at the last forward (the grid uses |alpha_|)
  MaskBits mask_;      // clipped entries (no x gradient)
  MaskBits negative_;  // sign of the clipped entries
  std::vector<double> row_sum_;
};

// The full Hadamard form: xq = HT(Q(HT(x))), dL/dx = HT(Q.backward(HT(g))). The transform is
// block-diagonal over 128-chunks of each row; cols % 128 != 0 is an error.
class HadamardQuantizer final : public TensorQuantizer {
 public:
  explicit HadamardQuantizer(std::unique_ptr<TensorQuantizer> inner);
  void reserve(int64_t rows, int64_t cols) override { inner_->reserve(rows, cols); }
  void forward(const float* x, float* xq, int64_t rows, int64_t cols) override;
  void backward(float* grad, int64_t rows, int64_t cols) override;
  std::span<float> params() override { return inner_->params(); }
  std::span<float> param_grads() override { return inner_->param_grads(); }
  std::vector<std::string> param_names() const override { return inner_->param_names(); }
  bool uses_hadamard() const override { return true; }
  TensorQuantizer* hadamard_inner() override { return inner_.get(); }
  const MaskBits* mask() const override { return inner_->mask(); }
  std::string describe() const override { return inner_->describe(); }

 private:
  std::unique_ptr<TensorQuantizer> inner_;
};

}  // namespace quest
