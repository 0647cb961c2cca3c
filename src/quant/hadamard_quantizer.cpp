// The full Hadamard form: transform, quantize in the transform domain, transform back. H is
// symmetric and orthonormal, so the same transform maps the gradient back (HT^T = HT).
#include <cstring>

#include "quant/hadamard.h"
#include "quant/quantizers.h"

namespace quest {

HadamardQuantizer::HadamardQuantizer(std::unique_ptr<TensorQuantizer> inner)
    : inner_(std::move(inner)) {}

void HadamardQuantizer::forward(const float* x, float* xq, int64_t rows, int64_t cols) {
  if (x != xq) std::memcpy(xq, x, sizeof(float) * size_t(rows * cols));
  hadamard_transform_rows(xq, rows, cols);
  inner_->forward(xq, xq, rows, cols);
  hadamard_transform_rows(xq, rows, cols);
}

void HadamardQuantizer::backward(float* grad, int64_t rows, int64_t cols) {
  hadamard_transform_rows(grad, rows, cols);
  inner_->backward(grad, rows, cols);
  hadamard_transform_rows(grad, rows, cols);
}

}  // namespace quest
