#pragma once
// The model's operations on NVIDIA GPUs: the same contracts as cpu_ops.h (read it first), with
// device pointers, bf16 activations and fp32 everything that accumulates:
// - activations and their gradients: bf16; RMSNorm's rstd and attention's log-sum-exp: fp32;
// - weights: a bf16 copy of the fp32 master weights (refreshed by the optimizer step);
// - parameter gradients: fp32, ACCUMULATED (+=) like on the CPU.
// Every call is asynchronous on `stream`, allocates nothing (scratch comes from the caller), and
// checks its arguments on the host (quest::Error). Kernels are tested against the CPU ops on
// random non-zero inputs (tests/cuda).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace quest::cuda {

using bf16 = __nv_bfloat16;

// Throws quest::Error with the file, line and CUDA's message when `status` is an error.
void check(cudaError_t status, const char* what, const char* file, int line);
#define QUEST_CUDA_CHECK(call) ::quest::cuda::check((call), #call, __FILE__, __LINE__)

// ---- conversions and elementwise --------------------------------------------------------------
void to_bf16(bf16* out, const float* in, int64_t n, cudaStream_t stream);
void to_f32(float* out, const bf16* in, int64_t n, cudaStream_t stream);
void add(bf16* out, const bf16* a, const bf16* b, int64_t n, cudaStream_t stream);  // out may alias
// The residual stream (fp32, as the reference keeps it under autocast) plus a layer's bf16 output.
void add(float* out, const float* a, const bf16* b, int64_t n, cudaStream_t stream);  // out may alias a

// ---- embedding -------------------------------------------------------------------------------
// The fp32 master table into the fp32 residual stream (the reference's precision).
// Token ids live on the device and are not validated on the host: a negative id gives a NaN row
// (forward) and no gradient (backward); ids past the table's end are the caller's to prevent.
void embedding_forward(float* out, const int32_t* tokens, const float* table, int64_t N, int64_t d,
                       cudaStream_t stream);
// dtable[tokens[n], :] += dout[n, :] (fp32 accumulation, rows in order: deterministic, bitwise the
// CPU's sums; no atomics). scratch: at least embedding_backward_scratch_bytes(N) bytes, 16-byte
// aligned (a stable sort of the tokens).
int64_t embedding_backward_scratch_bytes(int64_t N);
void embedding_backward(float* dtable, const float* dout, const int32_t* tokens, int64_t N, int64_t d,
                        void* scratch, cudaStream_t stream);

// ---- RMSNorm ---------------------------------------------------------------------------------
// x: the fp32 residual stream; w: the fp32 master weight; out: bf16 (a linear layer's input).
void rmsnorm_forward(bf16* out, float* rstd, const float* x, const float* w, int64_t N, int64_t d,
                     float eps, cudaStream_t stream);
// The residual add folded in: res_out = res_in + branch (add's fp32 addition; res_out may alias
// res_in), then rmsnorm_forward(out, rstd, res_out, w, ...), bitwise those two calls in one pass.
void add_rmsnorm_forward(float* res_out, bf16* out, float* rstd, const float* res_in,
                         const bf16* branch, const float* w, int64_t N, int64_t d, float eps,
                         cudaStream_t stream);
// dx accumulates (the fp32 residual stream's gradient; it must not alias dout), dw accumulates
// (deterministic); dx_copy, when not null, receives bf16(dx) after the update (what the next
// linear layer's backward reads). scratch: at least rmsnorm_backward_scratch(N, d) floats.
int64_t rmsnorm_backward_scratch(int64_t N, int64_t d);
void rmsnorm_backward(float* dx, bf16* dx_copy, float* dw, const bf16* dout, const float* x,
                      const float* w, const float* rstd, int64_t N, int64_t d, float* scratch,
                      cudaStream_t stream);

// ---- RoPE, adjacent pairs, as cpu::rope_forward / rope_backward --------------------------------
void rope_forward(bf16* qkv, int64_t B, int64_t T, int64_t n_head, int64_t head_dim, float theta,
                  int64_t pos0, cudaStream_t stream);
void rope_backward(bf16* dqkv, int64_t B, int64_t T, int64_t n_head, int64_t head_dim, float theta,
                   int64_t pos0, cudaStream_t stream);

// ---- causal attention, flash-style: the T x T scores never reach memory -------------------------
// qkv[B,T,3C] (after RoPE) -> out[B,T,C]; lse[B,n_head,T] = log-sum-exp of each query's scaled
// scores (fp32), kept for backward.
void attention_forward(bf16* out, float* lse, const bf16* qkv, int64_t B, int64_t T, int64_t n_head,
                       int64_t head_dim, cudaStream_t stream);
// dqkv[B,T,3C] overwritten. scratch: at least attention_backward_scratch(B, T, n_head, head_dim)
// floats.
int64_t attention_backward_scratch(int64_t B, int64_t T, int64_t n_head, int64_t head_dim);
void attention_backward(bf16* dqkv, const bf16* dout, const bf16* out, const bf16* qkv,
                        const float* lse, int64_t B, int64_t T, int64_t n_head, int64_t head_dim,
                        float* scratch, cudaStream_t stream);

// ---- SwiGLU ----------------------------------------------------------------------------------
void swiglu_forward(bf16* out, const bf16* a, const bf16* b, int64_t n, cudaStream_t stream);
void swiglu_backward(bf16* da, bf16* db, const bf16* dout, const bf16* a, const bf16* b, int64_t n,
                     cudaStream_t stream);

// ---- softmax cross-entropy over the first V of Vp columns (as cpu::cross_entropy) --------------
// losses[N] (fp32, device; may be null) receives each row's loss; when dlogits is not null it
// receives grad_scale * (softmax - onehot) in bf16 (padding columns 0); dlogits may alias logits.
// Targets are not validated on the host: a row whose target is outside [0, V) gets a NaN loss and
// a NaN gradient row.
void cross_entropy(bf16* dlogits, float* losses, const bf16* logits, const int32_t* targets,
                   int64_t N, int64_t V, int64_t Vp, float grad_scale, cudaStream_t stream);

// ---- matrix products (cuBLASLt; bf16 in, fp32 accumulate) --------------------------------------
// The workspace is shared by all calls of one Blas: use one Blas per stream (or serialized
// streams). Algorithms are chosen once per (product, shape, pointer alignment) and cached.
struct BlasBackwardFlags {
  bool dx_accumulate = false, dw_overwrite = false;
};
class Blas {
 public:
  explicit Blas(size_t workspace_bytes = 32u << 20);
  ~Blas();
  Blas(const Blas&) = delete;
  Blas& operator=(const Blas&) = delete;
  // out[N,M] = x[N,K] . w[M,K]^T (bf16 out, overwritten)
  void matmul_forward(bf16* out, const bf16* x, const bf16* w, int64_t N, int64_t K, int64_t M,
                      cudaStream_t stream);
  // dx[N,K] = dout . w (bf16, overwritten; skipped when null); dw[M,K] += dout^T . x (fp32).
  // The flags (BlasBackwardFlags) turn the first into dx += dout . w (the sum of two layers' input
  // gradients without a separate add: fp32 sum of the bf16 dx and the product, rounded once) and
  // the second into dw = dout^T . x (a scratch gradient that need not be zeroed first).
  using BackwardFlags = BlasBackwardFlags;
  void matmul_backward(bf16* dx, float* dw, const bf16* dout, const bf16* x, const bf16* w,
                       int64_t N, int64_t K, int64_t M, cudaStream_t stream,
                       BackwardFlags flags = {});

 private:
  void* handle_ = nullptr;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
};

// ---- optimizer -------------------------------------------------------------------------------
// out[0] = sum of g[i]^2 (accumulated in fp64, stored as fp32), deterministic (fixed-order
// two-pass reduction). scratch: at least norm_squared_scratch(n) floats.
int64_t norm_squared_scratch(int64_t n);
void norm_squared(float* out, const float* g, int64_t n, float* scratch, cudaStream_t stream);
// AdamW exactly as train/adamw.cpp (torch's rule), on n parameters; the clip factor is read from
// device memory (computed from the global norm without a host round trip); also writes the bf16
// copy of the updated parameters (skipped when p_bf16 is null). A non-finite clip factor (a
// diverged gradient) leaves p, m, v and p_bf16 untouched: the host, reading the norm, reports it.
struct AdamWStep {
  float lr, beta1, beta2, eps, weight_decay;  // weight_decay 0 for groups without decay
  float bias1, bias2;                         // 1 - beta^t
};
void adamw_update(float* p, bf16* p_bf16, const float* g, float* m, float* v, int64_t n,
                  const AdamWStep& step, const float* clip_scale, cudaStream_t stream);
// clip_scale[0] = min(1, max_norm / (sqrt(norm_squared[0]) + 1e-6)) (1 when max_norm <= 0; NaN
// when the norm is not finite)
void clip_scale(float* clip_scale, const float* norm_squared, float max_norm, cudaStream_t stream);

}  // namespace quest::cuda
