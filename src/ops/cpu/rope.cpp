// Rotary position embedding on adjacent pairs (2i, 2i+1) of each head of q and k.
// Pair i at position p turns by the angle p * theta^(-2i/head_dim). Angles and their cos/sin are
// computed in double: at long positions a float angle would lose the low-frequency pairs' phase.
#include <cmath>

#include "core/error.h"
#include "ops/cpu_ops.h"
#include "ops/op_profile.h"

namespace quest::cpu {
namespace {

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
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < B * T; ++row) {
    const double pos = double(pos0 + row % T);
    float* q = qkv + row * 3 * C;  // k follows at q + C
    for (int64_t i = 0; i < half; ++i) {
      const double angle = pos * std::exp(-double(2 * i) / double(head_dim) * log_theta);
      const float c = float(std::cos(angle));
      const float s = float(sign * std::sin(angle));
      for (int64_t part = 0; part < 2; ++part) {  // q, then k
        for (int64_t h = 0; h < n_head; ++h) {
          float* p = q + part * C + h * head_dim + 2 * i;
          const float x0 = p[0], x1 = p[1];
          p[0] = x0 * c - x1 * s;
          p[1] = x0 * s + x1 * c;
        }
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
