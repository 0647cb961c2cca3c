#pragma once
// The product of one linear layer, y[N,out] = x[N,in] . W[out,in]^T, with the slot where the
// weight and input quantizers plug in (QUEST_SPEC.md section 1). Without quantizers it is a plain
// fp32 matmul. The model owns the weight and its gradient; this op owns what backward needs.
//
// Invariants
// - prepare_weight() is called once per optimizer step (weights change only there), before the
//   step's forward passes; forward() never re-quantizes the weight.
// - Each forward(x) is followed by its backward() before the next forward() of this layer
//   (the trainer runs micro-batches one after the other). Without an input quantizer the op keeps
//   a pointer to x, which the caller keeps alive until backward().
#include <cstdint>
#include <memory>
#include <vector>

#include "quant/quantizer.h"

namespace quest {

class LinearOp {
 public:
  LinearOp(int64_t in, int64_t out, int64_t max_rows);
  ~LinearOp();
  LinearOp(LinearOp&&) noexcept;
  LinearOp& operator=(LinearOp&&) noexcept;

  int64_t in_features() const { return in_; }
  int64_t out_features() const { return out_; }

  void prepare_weight(const float* w);
  void forward(const float* x, float* y, int64_t N);
  // dx[N,in] overwritten (skipped when null); dw[out,in] accumulates.
  void backward(const float* dy, float* dx, float* dw, int64_t N);

 private:
  int64_t in_, out_, max_rows_;
  const float* w_ = nullptr;  // the weight used by forward (fp32 master or its quantized copy)
  const float* x_ = nullptr;  // the input saved for backward
};

}  // namespace quest
