// Causal multi-head attention, softmax(q k^T / sqrt(head_dim)) v, as tight per-row loops.
// Each query row is independent in the forward pass, so rows are spread over threads; the
// backward pass sums key/value gradients over query rows, so it is split over (batch, head) and
// walks the rows in order: no atomics, results independent of the thread count. No BLAS inside
// the OpenMP regions (OpenBLAS is the pthread build and must not nest).
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"
#include "ops/cpu_ops.h"
#include "ops/op_profile.h"

namespace quest::cpu {
namespace {

// A fixed-order dot product with four partial sums (faster than one serial chain, same result on
// every call).
inline float dot(const float* a, const float* b, int64_t n) {
  float s0 = 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f;
  int64_t j = 0;
  for (; j + 4 <= n; j += 4) {
    s0 += a[j] * b[j];
    s1 += a[j + 1] * b[j + 1];
    s2 += a[j + 2] * b[j + 2];
    s3 += a[j + 3] * b[j + 3];
  }
  for (; j < n; ++j) s0 += a[j] * b[j];
  return (s0 + s1) + (s2 + s3);
}

inline void axpy(float* y, float alpha, const float* x, int64_t n) {
  for (int64_t j = 0; j < n; ++j) y[j] += alpha * x[j];
}

// One query against keys/values 0..n_keys-1 (rows ld floats apart): p[s] = softmax_s(scale q.k_s),
// o = sum_s p[s] v_s. Shared by the full and the cached forward so both give the same numbers.
void attend_row(float* o, float* p, const float* q, const float* k, const float* v, int64_t ld,
                int64_t n_keys, int64_t hd, float scale) {
  float mx = -INFINITY;
  for (int64_t s = 0; s < n_keys; ++s) {
    p[s] = dot(q, k + s * ld, hd) * scale;
    mx = std::max(mx, p[s]);
  }
  double sum = 0.0;
  for (int64_t s = 0; s < n_keys; ++s) {
    p[s] = std::exp(p[s] - mx);
    sum += p[s];
  }
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

}  // namespace

void attention_forward(float* out, float* probs, const float* qkv, int64_t B, int64_t T,
                       int64_t n_head, int64_t head_dim) {
  QUEST_OP_PROFILE("attention_forward");
  check_shape("attention_forward", B, T, n_head, head_dim);
  const int64_t C = n_head * head_dim;
  const float scale = float(1.0 / std::sqrt(double(head_dim)));
  const int64_t rows = B * n_head * T;
  // Row t costs ~t: dynamic chunks balance the causal triangle.
#pragma omp parallel for schedule(dynamic, 16)
  for (int64_t idx = 0; idx < rows; ++idx) {
    const int64_t t = idx % T, bh = idx / T, h = bh % n_head, b = bh / n_head;
    const float* base = qkv + b * T * 3 * C + h * head_dim;  // q of token 0, head h
    float* p = probs + idx * T;
    attend_row(out + (b * T + t) * C + h * head_dim, p, base + t * 3 * C, base + C, base + 2 * C,
               3 * C, t + 1, head_dim, scale);
    std::fill(p + t + 1, p + T, 0.0f);  // masked (future) positions
  }
}

void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* probs,
                        int64_t B, int64_t T, int64_t n_head, int64_t head_dim) {
  QUEST_OP_PROFILE("attention_backward");
  check_shape("attention_backward", B, T, n_head, head_dim);
  const int64_t C = n_head * head_dim;
  const float scale = float(1.0 / std::sqrt(double(head_dim)));
#pragma omp parallel
  {
    std::vector<float> dp(static_cast<size_t>(std::max<int64_t>(T, 1)));  // dL/dp for one query row
#pragma omp for schedule(static)
    for (int64_t bh = 0; bh < B * n_head; ++bh) {
      const int64_t b = bh / n_head, h = bh % n_head;
      const float* q = qkv + b * T * 3 * C + h * head_dim;
      const float* k = q + C;
      const float* v = q + 2 * C;
      float* dq = dqkv + b * T * 3 * C + h * head_dim;
      float* dk = dq + C;
      float* dv = dq + 2 * C;
      for (int64_t t = 0; t < T; ++t) {  // this head's slices are overwritten
        std::fill(dq + t * 3 * C, dq + t * 3 * C + head_dim, 0.0f);
        std::fill(dk + t * 3 * C, dk + t * 3 * C + head_dim, 0.0f);
        std::fill(dv + t * 3 * C, dv + t * 3 * C + head_dim, 0.0f);
      }
      for (int64_t t = 0; t < T; ++t) {
        const float* p = probs + (bh * T + t) * T;
        const float* g = dout + (b * T + t) * C + h * head_dim;
        // Softmax backward: ds = p * (dp - sum_s p dp), then the score's scale.
        double pdp = 0.0;
        for (int64_t s = 0; s <= t; ++s) {
          dp[s] = dot(g, v + s * 3 * C, head_dim);
          pdp += double(p[s]) * dp[s];
        }
        const float D = float(pdp);
        float* dqt = dq + t * 3 * C;
        const float* qt = q + t * 3 * C;
        for (int64_t s = 0; s <= t; ++s) {
          const float ds = p[s] * (dp[s] - D) * scale;
          axpy(dqt, ds, k + s * 3 * C, head_dim);
          axpy(dk + s * 3 * C, ds, qt, head_dim);
          axpy(dv + s * 3 * C, p[s], g, head_dim);
        }
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
