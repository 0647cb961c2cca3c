#pragma once
// The quantizer interface that plugs into every linear layer (QUEST_SPEC.md sections 1-4). One
// instance quantizes one tensor role of one layer: the weight [out, in] or the input [tokens, in],
// row by row. The concrete quantizers (quantizers.h) implement it; make_quantizer() (factory.h)
// builds one from a QuantSpec.
//
// Invariants
// - reserve(rows, cols) is called once with the largest shape; forward()/backward() then allocate
//   nothing (a larger shape than reserved grows the buffers once).
// - backward() refers to the last forward(); the mask of the last forward() stays readable (mask(),
//   masked_fraction()) until the next forward().
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "quant/mask_bits.h"

namespace quest {

class TensorQuantizer {
 public:
  virtual ~TensorQuantizer() = default;

  // Plans buffers for up to rows x cols entries.
  virtual void reserve(int64_t rows, int64_t cols) {}

  // xq[rows, cols] = Q(x[rows, cols]); saves what backward() needs (masks, scales, ...).
  // x and xq may alias.
  virtual void forward(const float* x, float* xq, int64_t rows, int64_t cols) = 0;

  // grad[rows, cols]: on entry dL/dxq of the last forward(), on exit dL/dx (in place). Also
  // accumulates (+=) the gradients of learned parameters (LSQ step, PACT alpha), if any.
  virtual void backward(float* grad, int64_t rows, int64_t cols) = 0;

  // Learned parameters (LSQ, PACT), their gradients and names; empty for the others. A value of 0
  // means "not initialized yet": the next forward() initializes it from its data (so restoring the
  // value from a checkpoint also restores the initialized state).
  virtual std::span<float> params() { return {}; }
  virtual std::span<float> param_grads() { return {}; }
  virtual std::vector<std::string> param_names() const { return {}; }

  // Whether the quantizer works in the Hadamard domain (its forward includes the transform).
  virtual bool uses_hadamard() const { return false; }
  // For a Hadamard quantizer: the quantizer it applies in the transform domain (the "half" form
  // calls it directly on rows the layer has already transformed). Null for the others.
  virtual TensorQuantizer* hadamard_inner() { return nullptr; }

  // The gradient mask of the last forward() (bit set = gradient zeroed), in the domain where the
  // quantizer masks (the Hadamard domain for Hadamard quantizers). Null when it never masks.
  virtual const MaskBits* mask() const { return nullptr; }
  // Fraction of entries the last forward() masked out (0 when it masks none).
  double masked_fraction() const {
    const MaskBits* m = mask();
    return m ? m->fraction() : 0.0;
  }

  virtual std::string describe() const = 0;
};

}  // namespace quest
