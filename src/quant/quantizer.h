#pragma once
// The quantizer interface that plugs into every linear layer (QUEST_SPEC.md sections 1-4). One
// instance quantizes one tensor role of one layer: the weight [out, in] or the input [tokens, in],
// row by row. The concrete quantizers (none, ste, clip, trust, hadamard-trust, ...) implement it.
#include <cstdint>
#include <memory>
#include <span>
#include <string>

namespace quest {

class TensorQuantizer {
 public:
  virtual ~TensorQuantizer() = default;

  // xq[rows, cols] = Q(x[rows, cols]); saves what backward() needs (masks, scales, ...).
  // x and xq may alias.
  virtual void forward(const float* x, float* xq, int64_t rows, int64_t cols) = 0;

  // grad[rows, cols]: on entry dL/dxq of the last forward(), on exit dL/dx (in place). Also
  // accumulates the gradients of learned parameters (LSQ step, PACT alpha), if any.
  virtual void backward(float* grad, int64_t rows, int64_t cols) = 0;

  // Learned parameters (LSQ, PACT) and their gradients; empty for the others.
  virtual std::span<float> params() { return {}; }
  virtual std::span<float> param_grads() { return {}; }

  // Whether the quantizer works in the Hadamard domain (its forward includes the transform).
  virtual bool uses_hadamard() const { return false; }

  // Fraction of entries whose gradient the last backward() masked out (0 when it masks none).
  virtual double masked_fraction() const { return 0.0; }

  virtual std::string describe() const = 0;
};

}  // namespace quest
