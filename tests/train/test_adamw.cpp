// AdamW against a direct double-precision transcription of torch.optim.AdamW + clip_grad_norm_.
#include <gtest/gtest.h>

#include <cmath>

#include "core/error.h"
#include "core/rng.h"
#include "train/adamw.h"

namespace quest {
namespace {

TEST(AdamW, MatchesTorchsUpdateRule) {
  Rng rng(9);
  const int n = 50;
  std::vector<float> p(n), g(n);
  for (auto& v : p) v = float(rng.normal());
  std::vector<double> rp(p.begin(), p.end()), rm(n, 0), rv(n, 0);
  AdamWConfig cfg;
  cfg.grad_clip = 1.0;
  // First 30 entries decay, the rest do not.
  AdamW opt(cfg, {{p.data(), g.data(), 30, true}, {p.data() + 30, g.data() + 30, 20, false}});
  for (int t = 1; t <= 5; ++t) {
    for (auto& v : g) v = float(rng.normal() * 0.5);
    double norm = 0;
    for (float v : g) norm += double(v) * v;
    norm = std::sqrt(norm);
    const double clip = std::min(1.0, 1.0 / (norm + 1e-6));
    const double lr = 1e-2 * t;
    EXPECT_NEAR(opt.step(lr), norm, 1e-9 * norm);
    for (int i = 0; i < n; ++i) {
      const double grad = g[i] * clip;
      if (i < 30) rp[i] *= 1 - lr * 0.1;
      rm[i] = 0.9 * rm[i] + 0.1 * grad;
      rv[i] = 0.95 * rv[i] + 0.05 * grad * grad;
      const double denom = std::sqrt(rv[i]) / std::sqrt(1 - std::pow(0.95, t)) + 1e-8;
      rp[i] -= lr / (1 - std::pow(0.9, t)) * rm[i] / denom;
    }
  }
  for (int i = 0; i < n; ++i) EXPECT_NEAR(p[i], rp[i], 2e-5) << i;
  EXPECT_EQ(opt.step_count(), 5);
}

TEST(AdamW, NonFiniteGradientIsAnError) {
  std::vector<float> p(4, 1.0f), g = {0.f, NAN, 1.f, 2.f};
  AdamW opt({}, {{p.data(), g.data(), 4, true}});
  EXPECT_THROW(opt.step(1e-3), Error);
}

}  // namespace
}  // namespace quest
