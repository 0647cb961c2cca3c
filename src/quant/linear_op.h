#pragma once
// The product of one linear layer, y[N,out] = Q_x(x[N,in]) . Q_w(W[out,in])^T, with the weight and
// input quantizers of a QuantConfig (QUEST_SPEC.md sections 1-4). Without quantizers it is a plain
// fp32 matmul. The model owns the weight and its gradient; this op owns what backward needs.
//
// Two forms for Hadamard quantizers (same outputs and gradients up to fp32 rounding, since H is
// orthonormal: x W^T = (xH)(WH)^T):
// - full: each quantizer transforms, quantizes and transforms back inside itself;
// - half (the cheap one): the op transforms x and W once, quantizes both in the transform domain
//   and multiplies there; backward dx = HT(mask_x * (dY . Wq_h)), dW += HT(mask_w * (dY^T . Xq_h)).
//   Half needs each quantizer to be Hadamard-based or none; otherwise the op uses the full form
//   (half_form() tells which one runs).
//
// Invariants
// - prepare_weight() is called once per optimizer step (weights change only there), before the
//   step's forward passes; forward() never re-quantizes the weight.
// - Each forward(x) is followed by its backward() before the next forward() of this layer
//   (the trainer runs micro-batches one after the other). With an input quantizer (or the half form)
//   the op keeps its own quantized copy of x; without one it keeps a pointer to x, which the caller
//   keeps alive until backward(). Without a weight quantizer it keeps a pointer to W.
// - Buffers are planned in the constructor / set_quant(); forward() and backward() allocate nothing.
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "quant/quant_spec.h"
#include "quant/quantizer.h"

namespace quest {

class LinearOp {
 public:
  LinearOp(int64_t in, int64_t out, int64_t max_rows);  // unquantized
  // Throws quest::Error for an invalid config or one that does not fit in_features (Hadamard needs
  // in % 128 == 0, sparse 4:8 in % 8 == 0).
  LinearOp(int64_t in, int64_t out, int64_t max_rows, const QuantConfig& quant);
  ~LinearOp();
  LinearOp(LinearOp&&) noexcept;
  LinearOp& operator=(LinearOp&&) noexcept;

  int64_t in_features() const { return in_; }
  int64_t out_features() const { return out_; }
  int64_t max_rows() const { return max_rows_; }

  // Replaces the quantizers (and plans their buffers); call prepare_weight() again afterwards.
  // Learned parameters restart uninitialized.
  void set_quant(const QuantConfig& quant);
  const QuantConfig& quant_config() const { return quant_; }
  bool half_form() const { return half_; }  // the form that actually runs

  void prepare_weight(const float* w);
  // Uses w ([out, in], in the domain the product runs in: the Hadamard domain in the half form) as
  // the product weight as it stands, bypassing the weight quantizer, until the next
  // prepare_weight(). The loader of packed exports installs the exported, already quantized
  // weights this way: quantizing them again would not give them back (the clip comes from the
  // row's rms, which quantization changes).
  void set_product_weight(const float* w);
  void forward(const float* x, float* y, int64_t N);
  // dx[N,in] overwritten (skipped when null); dw[out,in] accumulates (skipped when null).
  void backward(const float* dy, float* dx, float* dw, int64_t N);

  // The quantizers (null when the role is not quantized).
  TensorQuantizer* weight_quantizer() { return wq_.get(); }
  TensorQuantizer* input_quantizer() { return xq_.get(); }
  const TensorQuantizer* weight_quantizer() const { return wq_.get(); }
  const TensorQuantizer* input_quantizer() const { return xq_.get(); }

  // Learned quantizer parameters (LSQ step, PACT alpha) with their gradients (which backward()
  // accumulates), named "weight.lsq_step", "input.pact_alpha", ... A value of 0 means "initialize
  // from the next forward's data".
  struct LearnedParam {
    std::string name;
    std::span<float> value, grad;
  };
  std::vector<LearnedParam> learned_params();

  // Statistics: the gradient masks of the last prepare_weight() / forward() (bit set = masked out;
  // in the Hadamard domain for Hadamard quantizers), null when the role never masks; and the
  // masked fractions (0 when it never masks).
  const MaskBits* weight_mask() const;
  const MaskBits* input_mask() const;
  double weight_masked_fraction() const;
  double input_masked_fraction() const;

  // The weight the product uses ([out, in]; in the Hadamard domain in the half form).
  const float* product_weight() const { return w_; }
  // True while the product weight is one given to set_product_weight() (a packed export's), which
  // another backend must install as it stands rather than quantize the master weight again.
  bool product_weight_is_fixed() const { return product_weight_fixed_; }

 private:
  TensorQuantizer* domain_quantizer(const std::unique_ptr<TensorQuantizer>& q) const;

  int64_t in_, out_, max_rows_;
  QuantConfig quant_;
  bool half_ = false;
  std::unique_ptr<TensorQuantizer> wq_, xq_;  // null = role not quantized
  std::vector<float> w_buf_;   // [out, in] quantized (and/or transformed) weight
  std::vector<float> x_buf_;   // [max_rows, in] quantized (and/or transformed) input
  std::vector<float> dw_buf_;  // [out, in] dW before the weight quantizer's backward
  const float* w_ = nullptr;   // the weight used by the product (W itself or w_buf_)
  const float* x_ = nullptr;   // the input saved for backward (x itself or x_buf_)
  int64_t n_ = 0;              // rows of the last forward
  bool product_weight_fixed_ = false;  // w_ came from set_product_weight()
};

}  // namespace quest
