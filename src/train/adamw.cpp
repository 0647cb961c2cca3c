#include "train/adamw.h"

#include <cmath>

#include "core/error.h"

namespace quest {

AdamW::AdamW(const AdamWConfig& cfg, std::vector<ParamGroup> groups)
    : cfg_(cfg), groups_(std::move(groups)) {
  int64_t total = 0;
  for (const auto& g : groups_) total += g.size;
  m_.assign(total, 0.0f);
  v_.assign(total, 0.0f);
}

double AdamW::grad_norm() const {
  // Fixed-size chunks summed in order: the same result for any thread count.
  constexpr int64_t kChunk = 1 << 16;
  double total = 0.0;
  for (const auto& g : groups_) {
    const int64_t chunks = (g.size + kChunk - 1) / kChunk;
    std::vector<double> partial(chunks, 0.0);
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < chunks; ++c) {
      double s = 0.0;
      const int64_t end = std::min(g.size, (c + 1) * kChunk);
      for (int64_t i = c * kChunk; i < end; ++i) s += double(g.grads[i]) * g.grads[i];
      partial[c] = s;
    }
    for (double s : partial) total += s;
  }
  return std::sqrt(total);
}

double AdamW::step(double lr) {
  const double norm = grad_norm();
  apply(lr, norm);
  return norm;
}

void AdamW::apply(double lr, double norm) {
  QUEST_CHECK(std::isfinite(norm), "the gradient norm is not finite ({}): training diverged", norm);
  const float clip = cfg_.grad_clip > 0 ? float(std::min(1.0, cfg_.grad_clip / (norm + 1e-6))) : 1.0f;
  ++t_;
  const double bias1 = 1.0 - std::pow(cfg_.beta1, double(t_));
  const double bias2 = 1.0 - std::pow(cfg_.beta2, double(t_));
  const float b1 = float(cfg_.beta1), b2 = float(cfg_.beta2);
  const float step_size = float(lr / bias1), bias2_sqrt = float(std::sqrt(bias2));
  const float eps = float(cfg_.eps);
  int64_t base = 0;
  for (const auto& g : groups_) {
    const float decay = g.decay ? float(1.0 - lr * cfg_.weight_decay) : 1.0f;
    float* m = m_.data() + base;
    float* v = v_.data() + base;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < g.size; ++i) {
      const float grad = g.grads[i] * clip;
      m[i] = b1 * m[i] + (1.0f - b1) * grad;
      v[i] = b2 * v[i] + (1.0f - b2) * grad * grad;
      const float denom = std::sqrt(v[i]) / bias2_sqrt + eps;
      g.params[i] = g.params[i] * decay - step_size * m[i] / denom;
    }
    base += g.size;
  }
}

}  // namespace quest
