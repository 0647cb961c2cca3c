// Rotary position embedding on adjacent pairs (2i, 2i+1) of each head of q and k.
// Pair i at position p turns by the angle p * theta^(-2i/head_dim). Angles and their cos/sin are
// computed in double: at long positions a float angle would lose the low-frequency pairs' phase.
// They are computed once per position and call (a table shared by the batch, the heads, q and k),
// then the rotation runs over contiguous pairs, vectorized.
#include <cmath>
#include <vector>

#include "core/error.h"
#include "ops/cpu/simd.h"
#include "ops/cpu_ops.h"
#include "ops/op_profile.h"

namespace quest::cpu {
namespace {

using namespace simd;

// sign = +1 rotates forward, -1 applies the inverse (transposed) rotation.
void rope_apply(float* qkv, int64_t B, int64_t T, int64_t n_head, int64_t head_dim, float theta,
                int64_t pos0, double sign, const char* op) {
  QUEST_CHECK(B >= 0 && T >= 0 && n_head >= 0 && head_dim > 0 && head_dim % 2 == 0,
              "{}: bad shape B={} T={} n_head={} head_dim={} (head_dim must be even)", op, B, T,
              n_head, head_dim);
  QUEST_CHECK(theta > 0.0f, "{}: theta must be positive, got {}", op, theta);
  const int64_t C = n_head * head_dim;
  const int64_t half = head_dim / 2;
  const double log_theta = std::log(double(theta));
  // Per position t: cc[2i] = cc[2i+1] = cos, ss[2i] = -sin, ss[2i+1] = +sin (sin already signed),
  // so that the pair (x0, x1) becomes (x0 c - x1 s, x1 c + x0 s) = x * cc + swap(x) * ss.
  thread_local std::vector<float> table;  // [T][2][head_dim], reused between calls
  table.resize(size_t(T * 2 * head_dim));
  float* tab = table.data();
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < T; ++t) {
    const double pos = double(pos0 + t);
    float* cc = tab + t * 2 * head_dim;
    float* ss = cc + head_dim;
    for (int64_t i = 0; i < half; ++i) {
      const double angle = pos * std::exp(-double(2 * i) / double(head_dim) * log_theta);
      const float c = float(std::cos(angle));
      const float s = float(sign * std::sin(angle));
      cc[2 * i] = cc[2 * i + 1] = c;
      ss[2 * i] = -s;
      ss[2 * i + 1] = s;
    }
  }
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < B * T; ++row) {
    const float* cc = tab + (row % T) * 2 * head_dim;
    const float* ss = cc + head_dim;
    float* q = qkv + row * 3 * C;  // q | k: 2 * n_head heads in a row
    for (int64_t h = 0; h < 2 * n_head; ++h) {
      float* p = q + h * head_dim;
      int64_t j = 0;
      for (; j + W <= head_dim; j += W) {
        const vf x = load(p + j);
        const vf xs = __builtin_shufflevector(x, x, 1, 0, 3, 2);
        store(p + j, x * load(cc + j) + xs * load(ss + j));
      }
      for (; j < head_dim; j += 2) {
        const float x0 = p[j], x1 = p[j + 1];
        p[j] = x0 * cc[j] + x1 * ss[j];
        p[j + 1] = x1 * cc[j + 1] + x0 * ss[j + 1];
      }
    }
  }
}

}  // namespace

void rope_forward(float* qkv, int64_t B, int64_t T, int64_t n_head, int64_t head_dim, float theta,
                  int64_t pos0) {
  QUEST_OP_PROFILE("rope_forward");
  rope_apply(qkv, B, T, n_head, head_dim, theta, pos0, +1.0, "rope_forward");
}

void rope_backward(float* dqkv, int64_t B, int64_t T, int64_t n_head, int64_t head_dim, float theta,
                   int64_t pos0) {
  QUEST_OP_PROFILE("rope_backward");
  // The rotation is orthogonal, so its Jacobian transposed is the rotation by -angle.
  rope_apply(dqkv, B, T, n_head, head_dim, theta, pos0, -1.0, "rope_backward");
}

}  // namespace quest::cpu
