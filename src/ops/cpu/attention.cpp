// Causal multi-head attention, softmax(q k^T / sqrt(head_dim)) v.
// Training (attention_forward / _backward): the products go to BLAS, per (batch, head), in blocks
// of query rows that only meet the keys up to the block's end (block-causal: about 5/8 of the full
// square at T = 512); the softmax and its backward run row by row over OpenMP threads, between the
// BLAS calls, never around them (OpenBLAS is the pthread build and must not nest). Each output
// element is produced by one fixed sequence of operations: results do not depend on the OpenMP
// thread count (as for the linear layers, on BLAS's partitioning into its own threads).
// Decoding (attention_forward_cached): tight per-row loops, vectorized (ops/cpu/simd.h).
#include <cblas.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <vector>

#include "core/error.h"
#include "ops/cpu_ops.h"
#include "ops/op_profile.h"
#include "ops/cpu/simd.h"

namespace quest::cpu {
namespace {

using simd::axpy;
using simd::dot;  // fixed-order, vectorized: the same result on every call

// One query against keys/values 0..n_keys-1 (rows ld floats apart): p[s] = softmax_s(scale q.k_s),
// o = sum_s p[s] v_s. Shared by the full and the cached forward so both give the same numbers.
void attend_row(float* o, float* p, const float* q, const float* k, const float* v, int64_t ld,
                int64_t n_keys, int64_t hd, float scale) {
  float mx = -INFINITY;
  for (int64_t s = 0; s < n_keys; ++s) {
    p[s] = dot(q, k + s * ld, hd) * scale;
    mx = std::max(mx, p[s]);
  }
  const double sum = simd::exp_shift_sum(p, p, mx, n_keys);
  const float inv = float(1.0 / sum);
  std::fill(o, o + hd, 0.0f);
  for (int64_t s = 0; s < n_keys; ++s) {
    p[s] *= inv;
    axpy(o, p[s], v + s * ld, hd);
  }
}

void check_shape(const char* op, int64_t B, int64_t T, int64_t n_head, int64_t head_dim) {
  QUEST_CHECK(B >= 0 && T >= 0 && n_head >= 0 && head_dim > 0,
              "{}: bad shape B={} T={} n_head={} head_dim={}", op, B, T, n_head, head_dim);
}

// cblas takes 32-bit sizes and leading dimensions.
void check_blas(const char* op, int64_t T, int64_t C) {
  QUEST_CHECK(T * T <= INT_MAX && 3 * C <= INT_MAX, "{}: T={} C={} exceed the BLAS int range", op,
              T, C);
}

// Query rows per block of the blocked products: each block of queries is multiplied with the keys
// up to its own end, so about half of the causal square's masked half is never computed.
constexpr int64_t kBlock = 128;

}  // namespace

void attention_forward(float* out, float* probs, const float* qkv, int64_t B, int64_t T,
                       int64_t n_head, int64_t head_dim) {
  QUEST_OP_PROFILE("attention_forward");
  check_shape("attention_forward", B, T, n_head, head_dim);
  check_blas("attention_forward", T, n_head * head_dim);
  const int64_t C = n_head * head_dim, ld = 3 * C;
  const float scale = float(1.0 / std::sqrt(double(head_dim)));
  const auto blas = [](int64_t n) { return blasint(std::max<int64_t>(n, 1)); };
  // Scores of each query block against the keys up to the block's end: probs = scale q k^T.
  for (int64_t bh = 0; bh < B * n_head; ++bh) {
    const float* q = qkv + (bh / n_head) * T * ld + (bh % n_head) * head_dim;
    float* P = probs + bh * T * T;
    for (int64_t t0 = 0; t0 < T; t0 += kBlock) {
      const int64_t r = std::min(kBlock, T - t0), e = t0 + r;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, blas(r), blas(e), blas(head_dim), scale,
                  q + t0 * ld, blas(ld), q + C, blas(ld), 0.0f, P + t0 * T, blas(T));
    }
  }
  // Causal softmax, row by row; the future positions become exact zeros.
#pragma omp parallel for schedule(static)
  for (int64_t idx = 0; idx < B * n_head * T; ++idx) {
    const int64_t t = idx % T;
    float* p = probs + idx * T;
    const float mx = simd::max(p, t + 1);
    const double sum = simd::exp_shift_sum(p, p, mx, t + 1);
    simd::scale(p, float(1.0 / sum), t + 1);
    std::fill(p + t + 1, p + T, 0.0f);
  }
  // out = p v, block by block (the zeros above the diagonal add nothing).
  for (int64_t bh = 0; bh < B * n_head; ++bh) {
    const int64_t b = bh / n_head, h = bh % n_head;
    const float* v = qkv + b * T * ld + h * head_dim + 2 * C;
    const float* P = probs + bh * T * T;
    for (int64_t t0 = 0; t0 < T; t0 += kBlock) {
      const int64_t r = std::min(kBlock, T - t0), e = t0 + r;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, blas(r), blas(head_dim), blas(e),
                  1.0f, P + t0 * T, blas(T), v, blas(ld), 0.0f, out + (b * T + t0) * C + h * head_dim,
                  blas(C));
    }
  }
}

void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* probs,
                        int64_t B, int64_t T, int64_t n_head, int64_t head_dim) {
  QUEST_OP_PROFILE("attention_backward");
  check_shape("attention_backward", B, T, n_head, head_dim);
  check_blas("attention_backward", T, n_head * head_dim);
  const int64_t C = n_head * head_dim, ld = 3 * C;
  const float scale = float(1.0 / std::sqrt(double(head_dim)));
  const auto blas = [](int64_t n) { return blasint(std::max<int64_t>(n, 1)); };
  // dS for one (batch, head) at a time, [T, T]; reused between calls.
  thread_local std::vector<float> ds_buf;
  ds_buf.resize(size_t(T * T));
  float* dS = ds_buf.data();
  for (int64_t bh = 0; bh < B * n_head; ++bh) {
    const int64_t b = bh / n_head, h = bh % n_head;
    const float* q = qkv + b * T * ld + h * head_dim;
    const float* k = q + C;
    const float* v = q + 2 * C;
    const float* g = dout + b * T * C + h * head_dim;
    const float* P = probs + bh * T * T;
    float* dq = dqkv + b * T * ld + h * head_dim;
    float* dk = dq + C;
    float* dv = dq + 2 * C;
    // dp = g v^T, block by block.
    for (int64_t t0 = 0; t0 < T; t0 += kBlock) {
      const int64_t r = std::min(kBlock, T - t0), e = t0 + r;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, blas(r), blas(e), blas(head_dim), 1.0f,
                  g + t0 * C, blas(C), v, blas(ld), 0.0f, dS + t0 * T, blas(T));
    }
    // Softmax backward, row by row: ds = p (dp - sum_s p dp) scale; zero past the diagonal up to
    // the block's end (the products below read that far). dk and dv start from zero.
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < T; ++t) {
      const float* p = P + t * T;
      float* d = dS + t * T;
      double pdp = 0.0;
      for (int64_t s = 0; s <= t; ++s) pdp += double(p[s]) * d[s];
      const float D = float(pdp);
      for (int64_t s = 0; s <= t; ++s) d[s] = p[s] * (d[s] - D) * scale;
      const int64_t e = std::min(T, (t / kBlock + 1) * kBlock);
      std::fill(d + t + 1, d + e, 0.0f);
      std::fill(dk + t * ld, dk + t * ld + head_dim, 0.0f);
      std::fill(dv + t * ld, dv + t * ld + head_dim, 0.0f);
    }
    for (int64_t t0 = 0; t0 < T; t0 += kBlock) {
      const int64_t r = std::min(kBlock, T - t0), e = t0 + r;
      // dq = ds k (overwritten); dk += ds^T q and dv += p^T g over the keys 0..e-1.
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, blas(r), blas(head_dim), blas(e), 1.0f,
                  dS + t0 * T, blas(T), k, blas(ld), 0.0f, dq + t0 * ld, blas(ld));
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, blas(e), blas(head_dim), blas(r), 1.0f,
                  dS + t0 * T, blas(T), q + t0 * ld, blas(ld), 1.0f, dk, blas(ld));
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, blas(e), blas(head_dim), blas(r), 1.0f,
                  P + t0 * T, blas(T), g + t0 * C, blas(C), 1.0f, dv, blas(ld));
    }
  }
}

void attention_forward_cached(float* out, const float* q, const float* k_cache,
                              const float* v_cache, int64_t T_new, int64_t T_past, int64_t n_head,
                              int64_t head_dim) {
  QUEST_OP_PROFILE("attention_forward_cached");
  check_shape("attention_forward_cached", 1, T_new, n_head, head_dim);
  QUEST_CHECK(T_past >= 0, "attention_forward_cached: negative T_past {}", T_past);
  const int64_t C = n_head * head_dim;
  const float scale = float(1.0 / std::sqrt(double(head_dim)));
#pragma omp parallel
  {
    std::vector<float> p(static_cast<size_t>(T_past + T_new + 1));  // one query's probabilities
#pragma omp for schedule(dynamic, 4)
    for (int64_t idx = 0; idx < n_head * T_new; ++idx) {
      const int64_t h = idx / T_new, i = idx % T_new;
      attend_row(out + i * C + h * head_dim, p.data(), q + i * C + h * head_dim,
                 k_cache + h * head_dim, v_cache + h * head_dim, C, T_past + i + 1, head_dim,
                 scale);
    }
  }
}

}  // namespace quest::cpu
