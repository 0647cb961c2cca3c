#pragma once
// The model's operations on the CPU, in fp32: forward and explicit backward for each, row-major
// buffers. This is the reference every other backend is checked against. The caller owns every
// buffer; the only memory an op keeps is reusable scratch (attention_backward: up to 16 MiB, or one
// [T, T] matrix if larger; rope: a [T, 2 * head_dim] table), grown on first use and kept by the
// calling thread.
//
// Conventions
// - N = number of token rows (B * T); d = model width; shapes are given in comments as [rows, cols].
// - Gradient outputs ACCUMULATE (+=) where the comment says "accumulates", and are OVERWRITTEN
//   otherwise. Parameter gradients always accumulate (gradient accumulation over micro-batches).
// - Work is spread over OpenMP threads; matrix products (attention's included) go to BLAS, always
//   from outside OpenMP regions. Results are deterministic and do not depend on the OpenMP thread
//   count. Each op times itself into the op profile (ops/op_profile.h) when that is enabled.
#include <cstdint>

namespace quest::cpu {

// ---- matrix products (BLAS) ------------------------------------------------------------------
// out[N,M] = x[N,K] . w[M,K]^T  (a linear layer without bias; out overwritten)
void matmul_forward(float* out, const float* x, const float* w, int64_t N, int64_t K, int64_t M);
// dx[N,K] = dout[N,M] . w[M,K] (overwritten; skipped when dx is null)
// dw[M,K] += dout[N,M]^T . x[N,K] (accumulates; skipped when dw is null)
void matmul_backward(float* dx, float* dw, const float* dout, const float* x, const float* w,
                     int64_t N, int64_t K, int64_t M);

// ---- embedding -------------------------------------------------------------------------------
// out[N,d] = table[tokens[n], :]. Negative ids throw quest::Error; the table's row count is not
// passed, so ids past its end are the caller's to prevent.
void embedding_forward(float* out, const int32_t* tokens, const float* table, int64_t N, int64_t d);
// dtable[tokens[n], :] += dout[n, :] (accumulates; deterministic order)
void embedding_backward(float* dtable, const float* dout, const int32_t* tokens, int64_t N,
                        int64_t d);

// ---- RMSNorm: out = x / sqrt(mean(x^2) + eps) * w --------------------------------------------
// rstd[N] receives 1 / sqrt(mean(x^2) + eps) for the backward pass.
void rmsnorm_forward(float* out, float* rstd, const float* x, const float* w, int64_t N, int64_t d,
                     float eps);
// dx[N,d] accumulates (it is the residual stream's gradient); dw[d] accumulates.
void rmsnorm_backward(float* dx, float* dw, const float* dout, const float* x, const float* w,
                      const float* rstd, int64_t N, int64_t d);

// ---- RoPE on adjacent pairs (2i, 2i+1), theta^(-2i/head_dim) ---------------------------------
// qkv[B,T,3*C] with C = n_head * head_dim holds q | k | v; q and k are rotated in place, v is left
// alone. Token t of the sequence sits at position pos0 + t.
void rope_forward(float* qkv, int64_t B, int64_t T, int64_t n_head, int64_t head_dim, float theta,
                  int64_t pos0 = 0);
// The inverse rotation applied to the q and k parts of dqkv, in place.
void rope_backward(float* dqkv, int64_t B, int64_t T, int64_t n_head, int64_t head_dim, float theta,
                   int64_t pos0 = 0);

// ---- causal multi-head attention, softmax(q k^T / sqrt(head_dim)) v ----------------------------
// qkv[B,T,3*C] (after RoPE); out[B,T,C]; probs[B,n_head,T,T] keeps the softmax for backward
// (entries above the diagonal are written as 0).
void attention_forward(float* out, float* probs, const float* qkv, int64_t B, int64_t T,
                       int64_t n_head, int64_t head_dim);
// dqkv[B,T,3*C] overwritten (q, k and v parts).
void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* probs,
                        int64_t B, int64_t T, int64_t n_head, int64_t head_dim);
// Decoding with a KV cache (one sequence): q[T_new, C] holds the queries of positions
// T_past .. T_past+T_new-1; k_cache, v_cache [T_past+T_new, C] hold keys and values of all
// positions so far (the new ones included). out[T_new, C]. Causal: query i sees keys 0..T_past+i.
void attention_forward_cached(float* out, const float* q, const float* k_cache,
                              const float* v_cache, int64_t T_new, int64_t T_past, int64_t n_head,
                              int64_t head_dim);

// ---- SwiGLU gate: out = silu(a) * b, silu(a) = a * sigmoid(a) --------------------------------
void swiglu_forward(float* out, const float* a, const float* b, int64_t n);
// da, db overwritten.
void swiglu_backward(float* da, float* db, const float* dout, const float* a, const float* b,
                     int64_t n);

// ---- softmax cross-entropy over a padded vocabulary -------------------------------------------
// logits[N, Vp]; only the first V columns are real tokens (the padding columns are excluded from
// the softmax and get zero gradient); a target outside [0, V) throws quest::Error.
// Returns the SUM over rows of -log softmax(logits)[target].
// losses[N] (optional, may be null) receives each row's loss.
// When dlogits is not null it receives grad_scale * (softmax - onehot(target)) (padding columns 0);
// dlogits may alias logits (in place).
double cross_entropy(float* dlogits, float* losses, const float* logits, const int32_t* targets,
                     int64_t N, int64_t V, int64_t Vp, float grad_scale);

}  // namespace quest::cpu
