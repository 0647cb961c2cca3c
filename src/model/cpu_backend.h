#pragma once
// The CPU backend of LlamaGraph: fp32 activations and weights, the ops of ops/cpu_ops.h, and
// quest::LinearOp (quantizers included) for the linear layers.
#include <memory>
#include <vector>

#include "ops/cpu_ops.h"
#include "quant/linear_op.h"

namespace quest {

struct CpuBackend {
  using Act = float;
  using Res = float;  // the residual stream and its gradient
  using Weight = float;
  using Linear = LinearOp;
  // Elements of one logits chunk of the lm_head (16M floats = 64 MB).
  static constexpr int64_t kHeadChunkElements = int64_t{16} << 20;

  // Owned host storage that converts to a plain pointer, like a device buffer would.
  template <class T>
  class Buffer {
   public:
    Buffer() = default;
    explicit Buffer(int64_t n) : data_(std::make_unique<T[]>(size_t(n))) { std::fill_n(data_.get(), n, T{}); }
    T* get() const { return data_.get(); }
    operator T*() const { return data_.get(); }

   private:
    std::unique_ptr<T[]> data_;
  };
  Buffer<float> alloc_act(int64_t n) { return Buffer<float>(n); }
  Buffer<float> alloc_res(int64_t n) { return Buffer<float>(n); }
  Buffer<float> alloc_f32(int64_t n) { return Buffer<float>(n); }
  void fill_zero(float* p, int64_t n) { std::fill_n(p, n, 0.0f); }

  void embedding_forward(float* out, const int32_t* tok, const float* table, int64_t N, int64_t d) {
    cpu::embedding_forward(out, tok, table, N, d);
  }
  void embedding_backward(float* dtable, const float* dout, const int32_t* tok, int64_t N, int64_t d) {
    cpu::embedding_backward(dtable, dout, tok, N, d);
  }
  void rmsnorm_forward(float* out, float* rstd, const float* x, const float* w, int64_t N, int64_t d, float eps) {
    cpu::rmsnorm_forward(out, rstd, x, w, N, d, eps);
  }
  // Res and Act are both fp32 here: the graph passes dx itself as dx_copy.
  // Linear backwards here apply their own masks (CudaBackend may leave one to the RMSNorm
  // backward that reads the gradient next): nothing is ever owed.
  struct MaskOwed {};
  void rmsnorm_backward(float* dx, float* /*dx_copy*/, float* dw, const float* dout, const float* x,
                        const float* w, const float* rstd, int64_t N, int64_t d, MaskOwed = {}) {
    cpu::rmsnorm_backward(dx, dw, dout, x, w, rstd, N, d);
  }
  // The producer and its linear layer (CudaBackend fuses them); here the plain composition.
  void rmsnorm_linear_forward(LinearOp& lin, LinearOp* /*also_reads_ln*/, float* ln, float* rstd,
                              const float* x, const float* w, float* y, int64_t N, int64_t d,
                              float eps) {
    rmsnorm_forward(ln, rstd, x, w, N, d, eps);
    lin.forward(ln, y, N);
  }
  void add_rmsnorm_linear_forward(LinearOp& lin, LinearOp* also_reads_ln, float* res_out,
                                  const float* res_in, const float* branch, float* ln, float* rstd,
                                  const float* w, float* y, int64_t N, int64_t d, float eps) {
    add(res_out, res_in, branch, N * d);
    rmsnorm_linear_forward(lin, also_reads_ln, ln, rstd, res_out, w, y, N, d, eps);
  }
  void swiglu_linear_forward(LinearOp& lin, float* g, const float* a, const float* b, float* y,
                             int64_t N, int64_t H) {
    swiglu_forward(g, a, b, N * H);
    lin.forward(g, y, N);
  }
  void rope_forward(float* qkv, int64_t B, int64_t T, int64_t nh, int64_t hd, float theta, int64_t pos0) {
    cpu::rope_forward(qkv, B, T, nh, hd, theta, pos0);
  }
  void rope_backward(float* dqkv, int64_t B, int64_t T, int64_t nh, int64_t hd, float theta, int64_t pos0) {
    cpu::rope_backward(dqkv, B, T, nh, hd, theta, pos0);
  }
  // The CPU keeps the softmax probabilities [B, nh, T, T] for backward.
  int64_t attention_saved_size(int64_t B, int64_t T, int64_t nh) { return B * nh * T * T; }
  void attention_forward(float* out, float* probs, const float* qkv, int64_t B, int64_t T, int64_t nh, int64_t hd) {
    cpu::attention_forward(out, probs, qkv, B, T, nh, hd);
  }
  void attention_backward(float* dqkv, const float* dout, const float* /*out*/, const float* qkv,
                          const float* probs, int64_t B, int64_t T, int64_t nh, int64_t hd) {
    cpu::attention_backward(dqkv, dout, qkv, probs, B, T, nh, hd);
  }
  void swiglu_forward(float* out, const float* a, const float* b, int64_t n) { cpu::swiglu_forward(out, a, b, n); }
  void swiglu_backward(float* da, float* db, const float* dout, const float* a, const float* b, int64_t n) {
    cpu::swiglu_backward(da, db, dout, a, b, n);
  }
  // The down projection's backward and SwiGLU's (CudaBackend fuses the input-gradient mask in).
  void swiglu_linear_backward(LinearOp& lin, const float* dy, float* dw, float* da, float* db, float* dg,
                              const float* a, const float* b, int64_t N, int64_t H) {
    lin.backward(dy, dg, dw, N);
    swiglu_backward(da, db, dg, a, b, N * H);
  }
  // Two linear layers of one input: dx = dx_a + dx_b (CudaBackend sums them in one product pass),
  // for an RMSNorm backward to read.
  MaskOwed linear_pair_backward_to_norm(LinearOp& a, const float* dya, float* dwa, LinearOp& b, const float* dyb,
                                        float* dwb, float* dx, float* scratch, int64_t N, int64_t d) {
    a.backward(dya, dx, dwa, N);
    b.backward(dyb, scratch, dwb, N);
    add(dx, dx, scratch, N * d);
    return {};
  }
  MaskOwed linear_backward_to_norm(LinearOp& lin, const float* dy, float* dx, float* dw, int64_t N) {
    lin.backward(dy, dx, dw, N);
    return {};
  }
  void add(float* out, const float* a, const float* b, int64_t n) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
  }
  void matmul_forward(float* out, const float* x, const float* w, int64_t N, int64_t K, int64_t M) {
    cpu::matmul_forward(out, x, w, N, K, M);
  }
  void matmul_backward(float* dx, float* dw, const float* dout, const float* x, const float* w, int64_t N,
                       int64_t K, int64_t M) {
    cpu::matmul_backward(dx, dw, dout, x, w, N, K, M);
  }
  void cross_entropy(float* dlogits, float* losses, const float* logits, const int32_t* y, int64_t N,
                     int64_t V, int64_t Vp, float grad_scale) {
    cpu::cross_entropy(dlogits, losses, logits, y, N, V, Vp, grad_scale);
  }
};

}  // namespace quest
