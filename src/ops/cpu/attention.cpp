// Causal multi-head attention, softmax(q k^T / sqrt(head_dim)) v.
// Training (attention_forward / _backward): the products go to BLAS, per (batch, head), in blocks
// of 128 query rows that only meet the keys up to the block's end (block-causal: (n+1)/(2n) of the
// full square for n blocks, 5/8 at T = 512); the softmax and its backward run row by row over
// OpenMP threads, between the BLAS calls, never around them (OpenBLAS is the pthread build and
// must not nest). Results do not depend on the OpenMP thread count; like the linear layers', they
// rest on OpenBLAS computing each product element the same way whatever its own thread count (it
// splits the output between threads, not the sums).
// Decoding (attention_forward_cached): tight per-row loops, vectorized (ops/cpu/simd.h); it agrees
// with the training forward to rounding.
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
// o = sum_s p[s] v_s.
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

// cblas takes 32-bit sizes and leading dimensions (at most T and 3 * C here).
void check_blas(const char* op, int64_t T, int64_t C) {
  QUEST_CHECK(T <= INT_MAX && 3 * C <= INT_MAX, "{}: T={} C={} exceed the BLAS int range", op, T, C);
}

// Query rows per block of the blocked products (64 and 256 measured the same on 2 cores).
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
  const int64_t C = n_head * head_dim, ld = 3 * C, BH = B * n_head;
  const float scale = float(1.0 / std::sqrt(double(head_dim)));
  const auto blas = [](int64_t n) { return blasint(std::max<int64_t>(n, 1)); };
  // dS for a group of (batch, head) pairs at a time, [G, T, T], at most 16 MiB unless one pair
  // needs more; reused between calls. Per group, three phases (products, rows, products) keep
  // BLAS's threads and OpenMP's from alternating at a fine grain.
  const int64_t G = std::clamp<int64_t>((int64_t{4} << 20) / std::max<int64_t>(T * T, 1), 1,
                                        std::max<int64_t>(BH, 1));
  thread_local std::vector<float> ds_buf;
  ds_buf.resize(size_t(G * T * T));
  float* dS = ds_buf.data();
  for (int64_t bh0 = 0; bh0 < BH; bh0 += G) {
    const int64_t bh1 = std::min(BH, bh0 + G);
    // dp = g v^T, block by block.
    for (int64_t bh = bh0; bh < bh1; ++bh) {
      const int64_t b = bh / n_head, h = bh % n_head;
      const float* v = qkv + b * T * ld + h * head_dim + 2 * C;
      const float* g = dout + b * T * C + h * head_dim;
      for (int64_t t0 = 0; t0 < T; t0 += kBlock) {
        const int64_t r = std::min(kBlock, T - t0), e = t0 + r;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, blas(r), blas(e), blas(head_dim),
                    1.0f, g + t0 * C, blas(C), v, blas(ld), 0.0f, dS + ((bh - bh0) * T + t0) * T,
                    blas(T));
      }
    }
    // Softmax backward, row by row: ds = p (dp - sum_s p dp) scale; zeros past the diagonal up
    // to the block's end (the products below read that far). dk and dv start from zero.
#pragma omp parallel for schedule(static)
    for (int64_t idx = bh0 * T; idx < bh1 * T; ++idx) {
      const int64_t t = idx % T, bh = idx / T, b = bh / n_head, h = bh % n_head;
      const float* p = probs + idx * T;
      float* d = dS + (idx - bh0 * T) * T;
      const float D = float(simd::dot_double(p, d, t + 1));
      simd::softmax_backward_row(d, p, D, scale, t + 1);
      std::fill(d + t + 1, d + std::min(T, (t / kBlock + 1) * kBlock), 0.0f);
      float* dk = dqkv + (b * T + t) * ld + C + h * head_dim;
      std::fill(dk, dk + head_dim, 0.0f);
      std::fill(dk + C, dk + C + head_dim, 0.0f);  // dv
    }
    for (int64_t bh = bh0; bh < bh1; ++bh) {
      const int64_t b = bh / n_head, h = bh % n_head;
      const float* q = qkv + b * T * ld + h * head_dim;
      const float* k = q + C;
      const float* g = dout + b * T * C + h * head_dim;
      const float* P = probs + bh * T * T;
      const float* S = dS + (bh - bh0) * T * T;
      float* dq = dqkv + b * T * ld + h * head_dim;
      float* dk = dq + C;
      float* dv = dq + 2 * C;
      for (int64_t t0 = 0; t0 < T; t0 += kBlock) {
        const int64_t r = std::min(kBlock, T - t0), e = t0 + r;
        // dq = ds k (overwritten); dk += ds^T q and dv += p^T g over the keys 0..e-1.
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, blas(r), blas(head_dim), blas(e),
                    1.0f, S + t0 * T, blas(T), k, blas(ld), 0.0f, dq + t0 * ld, blas(ld));
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, blas(e), blas(head_dim), blas(r),
                    1.0f, S + t0 * T, blas(T), q + t0 * ld, blas(ld), 1.0f, dk, blas(ld));
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, blas(e), blas(head_dim), blas(r),
                    1.0f, P + t0 * T, blas(T), g + t0 * C, blas(C), 1.0f, dv, blas(ld));
      }
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
