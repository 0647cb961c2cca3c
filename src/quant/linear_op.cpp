#include "quant/linear_op.h"

#include "core/error.h"
#include "ops/cpu_ops.h"

namespace quest {

LinearOp::LinearOp(int64_t in, int64_t out, int64_t max_rows)
    : in_(in), out_(out), max_rows_(max_rows) {}
LinearOp::~LinearOp() = default;
LinearOp::LinearOp(LinearOp&&) noexcept = default;
LinearOp& LinearOp::operator=(LinearOp&&) noexcept = default;

void LinearOp::prepare_weight(const float* w) { w_ = w; }

void LinearOp::forward(const float* x, float* y, int64_t N) {
  QUEST_CHECK(w_ != nullptr, "LinearOp::forward before prepare_weight");
  QUEST_CHECK(N <= max_rows_, "LinearOp: {} rows exceed the planned {}", N, max_rows_);
  x_ = x;
  cpu::matmul_forward(y, x, w_, N, in_, out_);
}

void LinearOp::backward(const float* dy, float* dx, float* dw, int64_t N) {
  cpu::matmul_backward(dx, dw, dy, x_, w_, N, in_, out_);
}

}  // namespace quest
