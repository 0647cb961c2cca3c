#pragma once
// The CUDA backend of LlamaGraph: bf16 activations and weight copies, fp32 gradients, the ops of
// ops/cuda_ops.h on one stream, and quest::cuda::CudaLinearOp (quantizers fused on the device)
// for the linear layers. Host C++ (compiled by the host compiler); the kernels live in .cu files.
//
// Precision follows the reference under bf16 autocast: the residual stream and its gradient are
// fp32; the embedding and RMSNorm read the fp32 master weights; RMSNorm writes the bf16 input of
// the next linear layer; matrix products, attention and SwiGLU work on bf16.
#include <cuda_runtime.h>

#include <memory>
#include <utility>

#include "core/error.h"
#include "ops/cuda/device_profile.h"
#include "ops/cuda/side_stream.h"
#include "ops/cuda_ops.h"
#include "quant/cuda/cuda_linear_op.h"

namespace quest {

// A device allocation owned like a unique_ptr; converts to its pointer.
template <class T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(int64_t n) {
    if (n > 0) QUEST_CUDA_CHECK(cudaMalloc(&p_, sizeof(T) * size_t(n)));
    if (n > 0) QUEST_CUDA_CHECK(cudaMemset(p_, 0, sizeof(T) * size_t(n)));
  }
  ~DeviceBuffer() {
    if (p_) cudaFree(p_);
  }
  DeviceBuffer(DeviceBuffer&& o) noexcept : p_(std::exchange(o.p_, nullptr)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    std::swap(p_, o.p_);
    return *this;
  }
  T* get() const { return p_; }
  operator T*() const { return p_; }

 private:
  T* p_ = nullptr;
};

// A linear layer of the graph: the device op, bound to the stream, reading the fp32 master weight
// (so its quantized values equal the CPU's) that sits at the same offset as the bf16 copy.
// With a side stream (side_stream.h), prepare_weight() runs there (after the work issued to the
// main stream so far: the optimizer step) and the main stream waits for it at the op's first use
// after that (op()), so that the weights of later layers are quantized while earlier layers run.
class CudaLinear {
 public:
  CudaLinear(std::unique_ptr<cuda::CudaLinearOp> op, cudaStream_t stream, const float* master,
             const cuda::bf16* copy, cuda::SideStream* side = nullptr)
      : op_(std::move(op)), stream_(stream), side_(side), master_(master), copy_(copy) {
    op_->set_weight_stream(side);
  }
  // An unquantized, untransformed weight is the bf16 copy itself (the optimizer writes it as the
  // master's round to nearest, what converting the master again would give).
  void prepare_weight(const cuda::bf16* w) {
    cudaStream_t s = stream_;
    if (side_) {
      side_->follow(stream_);  // after the parameters' update
      s = side_->get();
    }
    if (op_->weight_is_plain())
      op_->prepare_weight(w, s);
    else
      op_->prepare_weight(master_ + (w - copy_), s);
    if (side_) {
      prepared_.record(s);
      pending_ = true;
    }
  }
  void forward(const cuda::bf16* x, cuda::bf16* y, int64_t N) { op().forward(x, y, N, stream_); }
  void backward(const cuda::bf16* dy, cuda::bf16* dx, float* dw, int64_t N) {
    if (side_) side_->guard(dx, stream_);
    op().backward(dy, dx, dw, N, stream_);
  }
  // The op, for work on the main stream: waits there for a pending prepare_weight() first.
  cuda::CudaLinearOp& op() {
    if (pending_) {
      prepared_.wait_in(stream_);
      pending_ = false;
    }
    return *op_;
  }

 private:
  std::unique_ptr<cuda::CudaLinearOp> op_;
  cudaStream_t stream_;
  cuda::SideStream* side_;
  const float* master_;
  const cuda::bf16* copy_;
  cuda::StreamEvent prepared_;
  bool pending_ = false;  // prepare_weight() ran on the side stream, not yet waited for
};

struct CudaBackend {
  using Act = cuda::bf16;
  using Res = float;
  using Weight = cuda::bf16;
  using Linear = CudaLinear;
  template <class T>
  using Buffer = DeviceBuffer<T>;
  // Elements of one bf16 logits chunk of the lm_head (2G = 4 GiB): one chunk for 64 x 512 tokens
  // of the GPT-2 vocabulary (3.3 GB). Each chunk adds a read and write of the fp32 lm_head
  // gradient (257 MB at 200M): 3.6 GB a step with the first 512 MiB chunks (7 of them), 1 GB with
  // 2 GiB ones, none now.
  static constexpr int64_t kHeadChunkElements = int64_t{1} << 31;

  // Scratch sized for micro-batches of up to [batch, seq_len] tokens of width d. `master` holds
  // the fp32 parameters whose bf16 copy, at `copy`, the graph passes as weights.
  // side: the weight stream (side_stream.h), or null (everything on s).
  CudaBackend(cudaStream_t s, cuda::Blas& b, const float* master, const Weight* copy, int64_t batch,
              int64_t seq_len, int64_t d, int64_t n_head, int64_t head_dim, cuda::SideStream* side = nullptr)
      : stream(s),
        side(side),
        blas(b),
        rms_scratch(cuda::rmsnorm_backward_scratch(batch * seq_len, d)),
        attn_scratch(cuda::attention_backward_scratch(batch, seq_len, n_head, head_dim)),
        embedding_scratch((cuda::embedding_backward_scratch_bytes(batch * seq_len) + 3) / 4),
        master_(master),
        copy_(copy) {}

  cudaStream_t stream;
  cuda::SideStream* side;
  cuda::Blas& blas;
  DeviceBuffer<float> rms_scratch, attn_scratch, embedding_scratch;

  DeviceBuffer<Act> alloc_act(int64_t n) { return DeviceBuffer<Act>(n); }
  DeviceBuffer<Res> alloc_res(int64_t n) { return DeviceBuffer<Res>(n); }
  DeviceBuffer<float> alloc_f32(int64_t n) { return DeviceBuffer<float>(n); }
  void fill_zero(float* p, int64_t n) { QUEST_CUDA_CHECK(cudaMemsetAsync(p, 0, sizeof(float) * size_t(n), stream)); }

  void embedding_forward(Res* out, const int32_t* tok, const Weight* table, int64_t N, int64_t d) {
    QUEST_DEVICE_PROFILE("embedding_forward", stream);
    cuda::embedding_forward(out, tok, master(table), N, d, stream);
  }
  void embedding_backward(float* dtable, const Res* dout, const int32_t* tok, int64_t N, int64_t d) {
    QUEST_DEVICE_PROFILE("embedding_backward", stream);
    cuda::embedding_backward(dtable, dout, tok, N, d, embedding_scratch, stream);
  }
  void rmsnorm_forward(Act* out, float* rstd, const Res* x, const Weight* w, int64_t N, int64_t d, float eps) {
    QUEST_DEVICE_PROFILE("rmsnorm_forward", stream);
    cuda::rmsnorm_forward(out, rstd, x, master(w), N, d, eps, stream);
  }
  // A mask pass a linear layer's backward left to the RMSNorm backward reading its dx.
  using MaskOwed = cuda::CudaLinearOp::PendingInputMask;
  // With `owed`, dout is the layer's unmasked input gradient: the mask and inverse transform run
  // inside the RMSNorm backward's loads (mask_ht_rmsnorm_backward, bitwise the two passes), or
  // first over dout where that kernel does not apply.
  void rmsnorm_backward(Res* dx, Act* dx_copy, float* dw, Act* dout, const Res* x, const Weight* w,
                        const float* rstd, int64_t N, int64_t d, MaskOwed owed = {}) {
    guard(dx_copy), guard(dout);
    if (owed.owed) {
      QUEST_DEVICE_PROFILE("mask_rmsnorm_backward", stream);
      if (cuda::mask_ht_rmsnorm_backward(dx, dx_copy, dw, dout, owed.mask, x, master(w), rstd, N, d, rms_scratch,
                                         stream))
        return;
      cuda::MaskBackward mb;
      mb.mask = owed.mask, mb.ht_after = true;
      cuda::mask_backward(dout, N, d, mb, stream);
    }
    QUEST_DEVICE_PROFILE("rmsnorm_backward", stream);
    cuda::rmsnorm_backward(dx, dx_copy, dw, dout, x, master(w), rstd, N, d, rms_scratch, stream);
  }
  // RMSNorm and the linear layer reading its output (CudaLinearOp::forward_rmsnorm: fused with
  // the layer's input quantizer where it can be). ln is written only where a reader needs it:
  // `also_reads_ln`, a second layer on the same ln, unless it takes lin's quantized input.
  void rmsnorm_linear_forward(Linear& lin, Linear* also_reads_ln, Act* ln, float* rstd, const Res* x,
                              const Weight* w, Act* y, int64_t N, int64_t d, float eps) {
    QUEST_CHECK(d == lin.op().in_features(), "rmsnorm_linear_forward: d {} vs in_features {}", d,
                lin.op().in_features());
    const bool write_ln = also_reads_ln && !also_reads_ln->op().shares_input_with(lin.op());
    lin.op().forward_rmsnorm(x, master(w), eps, rstd, ln, write_ln, y, N, stream);
  }
  // The residual add of the previous branch folded in front: res_out = res_in + branch (fp32, as
  // add(Res*, ...); the backward and the next residual read it), then rmsnorm_linear_forward on
  // res_out (CudaLinearOp::forward_add_rmsnorm: one kernel with the input quantizer, or the
  // plain add_rmsnorm kernel before an unquantized product).
  void add_rmsnorm_linear_forward(Linear& lin, Linear* also_reads_ln, Res* res_out, const Res* res_in,
                                  const Act* branch, Act* ln, float* rstd, const Weight* w, Act* y,
                                  int64_t N, int64_t d, float eps) {
    QUEST_CHECK(d == lin.op().in_features(), "add_rmsnorm_linear_forward: d {} vs in_features {}",
                d, lin.op().in_features());
    const bool write_ln = also_reads_ln && !also_reads_ln->op().shares_input_with(lin.op());
    lin.op().forward_add_rmsnorm(res_in, branch, res_out, master(w), eps, rstd, ln, write_ln, y, N,
                                 stream);
  }
  // SwiGLU and the down projection (CudaLinearOp::forward_swiglu); g has no other reader (the
  // backward recomputes from a and b), so the fused pass does not write it.
  void swiglu_linear_forward(Linear& lin, Act* g, const Act* a, const Act* b, Act* y, int64_t N,
                             int64_t H) {
    QUEST_CHECK(H == lin.op().in_features(), "swiglu_linear_forward: H {} vs in_features {}", H,
                lin.op().in_features());
    lin.op().forward_swiglu(a, b, g, false, y, N, stream);
  }
  void rope_forward(Act* qkv, int64_t B, int64_t T, int64_t nh, int64_t hd, float theta, int64_t pos0) {
    QUEST_DEVICE_PROFILE("rope_forward", stream);
    cuda::rope_forward(qkv, B, T, nh, hd, theta, pos0, stream);
  }
  void rope_backward(Act* dqkv, int64_t B, int64_t T, int64_t nh, int64_t hd, float theta, int64_t pos0) {
    guard(dqkv);
    QUEST_DEVICE_PROFILE("rope_backward", stream);
    cuda::rope_backward(dqkv, B, T, nh, hd, theta, pos0, stream);
  }
  // The GPU keeps only each query's log-sum-exp [B, nh, T] and recomputes the scores.
  int64_t attention_saved_size(int64_t B, int64_t T, int64_t nh) { return B * nh * T; }
  void attention_forward(Act* out, float* lse, const Act* qkv, int64_t B, int64_t T, int64_t nh, int64_t hd) {
    QUEST_DEVICE_PROFILE("attention_forward", stream);
    cuda::attention_forward(out, lse, qkv, B, T, nh, hd, stream);
  }
  void attention_backward(Act* dqkv, const Act* dout, const Act* out, const Act* qkv, const float* lse,
                          int64_t B, int64_t T, int64_t nh, int64_t hd) {
    guard(dqkv);
    QUEST_DEVICE_PROFILE("attention_backward", stream);
    cuda::attention_backward(dqkv, dout, out, qkv, lse, B, T, nh, hd, attn_scratch, stream);
  }
  void swiglu_forward(Act* out, const Act* a, const Act* b, int64_t n) {
    QUEST_DEVICE_PROFILE("swiglu_forward", stream);
    cuda::swiglu_forward(out, a, b, n, stream);
  }
  void swiglu_backward(Act* da, Act* db, const Act* dout, const Act* a, const Act* b, int64_t n) {
    guard(da), guard(db);
    QUEST_DEVICE_PROFILE("swiglu_backward", stream);
    cuda::swiglu_backward(da, db, dout, a, b, n, stream);
  }
  // The down projection's backward and SwiGLU's (CudaLinearOp::backward_swiglu).
  void swiglu_linear_backward(Linear& lin, const Act* dy, float* dw, Act* da, Act* db, Act* dg, const Act* a,
                              const Act* b, int64_t N, int64_t /*H*/) {
    guard(da), guard(db), guard(dg);
    lin.op().backward_swiglu(dy, dw, a, b, da, db, dg, N, stream);
  }
  // Two linear layers of one input (CudaLinearOp::backward_shared_input): dx = dx_a + dx_b, for
  // an RMSNorm backward to read: the mask pass may be left to it (what is owed is returned).
  MaskOwed linear_pair_backward_to_norm(Linear& a, const Act* dya, float* dwa, Linear& b, const Act* dyb,
                                        float* dwb, Act* dx, Act* scratch, int64_t N, int64_t /*d*/) {
    guard(dx), guard(scratch);
    return cuda::CudaLinearOp::backward_shared_input(a.op(), dya, dwa, b.op(), dyb, dwb, dx, scratch, N, stream,
                                                     /*defer_mask=*/true);
  }
  // A linear layer's backward whose dx an RMSNorm backward reads next (as the pair above).
  MaskOwed linear_backward_to_norm(Linear& lin, const Act* dy, Act* dx, float* dw, int64_t N) {
    guard(dx);
    return lin.op().backward(dy, dx, dw, N, stream, /*defer_mask=*/true);
  }
  void add(Act* out, const Act* a, const Act* b, int64_t n) {
    guard(out);
    QUEST_DEVICE_PROFILE("add", stream);
    cuda::add(out, a, b, n, stream);
  }
  void add(Res* out, const Res* a, const Act* b, int64_t n) {
    QUEST_DEVICE_PROFILE("residual_add", stream);
    cuda::add(out, a, b, n, stream);
  }
  void matmul_forward(Act* out, const Act* x, const Weight* w, int64_t N, int64_t K, int64_t M) {
    guard(out);
    QUEST_DEVICE_PROFILE("lm_head_forward", stream, K, M);
    blas.matmul_forward(out, x, w, N, K, M, stream);
  }
  // The lm_head's dW runs on the side stream when there is one (side_stream.h).
  void matmul_backward(Act* dx, float* dw, const Act* dout, const Act* x, const Weight* w, int64_t N,
                       int64_t K, int64_t M) {
    guard(dx);
    if (!side) {
      QUEST_DEVICE_PROFILE("lm_head_backward", stream, K, M);
      blas.matmul_backward(dx, dw, dout, x, w, N, K, M, stream);
      return;
    }
    {
      QUEST_DEVICE_PROFILE("lm_head_backward_dx", stream, K, M);
      blas.matmul_backward(dx, nullptr, dout, x, w, N, K, M, stream);
    }
    side->follow(stream);
    {
      QUEST_DEVICE_PROFILE("lm_head_backward_dw", side->get(), K, M);
      side->blas().matmul_backward(nullptr, dw, dout, x, w, N, K, M, side->get());
    }
    side->reading(dout), side->reading(x);
  }
  void cross_entropy(Act* dlogits, float* losses, const Act* logits, const int32_t* y, int64_t N, int64_t V,
                     int64_t Vp, float grad_scale) {
    guard(dlogits);
    QUEST_DEVICE_PROFILE("cross_entropy", stream);
    cuda::cross_entropy(dlogits, losses, logits, y, N, V, Vp, grad_scale, stream);
  }

 private:
  // Before the main stream writes p: the side's reads of it are done.
  void guard(const void* p) {
    if (side && p) side->guard(p, stream);
  }
  const float* master(const Weight* w) const { return master_ + (w - copy_); }
  const float* master_;
  const Weight* copy_;
};

}  // namespace quest
