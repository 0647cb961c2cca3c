// LSQ and PACT: forward grids, initialization, and learned-parameter gradients against central
// finite differences of the functions their estimators differentiate.
#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "core/error.h"
#include "quant/alpha.h"
#include "quant/factory.h"
#include "quant_test_util.h"

namespace quest {
namespace {

constexpr int64_t kRows = 4, kCols = 100;

TEST(Lsq, InitLevelsAndStepGradient) {
  for (int b : {2, 3, 4, 8}) {
    SCOPED_TRACE(b);
    auto q = make_quantizer(QuantSpec::parse(fmt::format("lsq:{}", b)), QuantRole::Input);
    ASSERT_EQ(q->params().size(), 1u);
    EXPECT_EQ(q->params()[0], 0.0f) << "uninitialized until the first forward";
    const auto x = test::gaussian(kRows * kCols, 40 + b, 1.3);
    const auto g = test::gaussian(kRows * kCols, 50 + b);
    std::vector<float> xq(x.size()), grad = g;
    q->forward(x.data(), xq.data(), kRows, kCols);

    const double qmin = -(1 << (b - 1)), qmax = (1 << (b - 1)) - 1;
    double mean_abs = 0;
    for (float v : x) mean_abs += std::fabs(v);
    mean_abs /= double(x.size());
    const double s0 = q->params()[0];
    EXPECT_NEAR(s0, 2 * mean_abs / std::sqrt(qmax), 1e-6 * s0);
    std::set<float> levels(xq.begin(), xq.end());
    for (float v : levels) {  // (q + 1/2) * s, q in [qmin, qmax]
      const double k = v / s0 - 0.5;
      ASSERT_NEAR(k, std::round(k), 1e-4);
      ASSERT_GE(std::round(k), qmin);
      ASSERT_LE(std::round(k), qmax);
    }

    q->backward(grad.data(), kRows, kCols);
    // The estimator differentiates F(s) = sum g * s * (clamp(x/s - 1/2, qmin, qmax) + r + 1/2),
    // with the rounding residual r = round(c) - c frozen at s0 (the straight-through round).
    std::vector<double> r(x.size());
    for (size_t i = 0; i < x.size(); ++i) {
      const double c = std::clamp(x[i] / s0 - 0.5, qmin, qmax);
      r[i] = std::nearbyint(c) - c;
    }
    auto F = [&](double s) {
      double f = 0;
      for (size_t i = 0; i < x.size(); ++i)
        f += g[i] * s * (std::clamp(x[i] / s - 0.5, qmin, qmax) + r[i] + 0.5);
      return f;
    };
    const double h = 1e-6 * s0;
    const double fd = (F(s0 + h) - F(s0 - h)) / (2 * h);
    const double gscale = 1.0 / std::sqrt(double(x.size()) * qmax);
    EXPECT_NEAR(q->param_grads()[0], fd * gscale, 1e-4 * std::fabs(fd * gscale) + 1e-6);
    // x gradient: straight-through inside the clip range, 0 outside.
    int clipped = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      const double u = x[i] / s0 - 0.5;
      const bool inside = u >= qmin && u <= qmax;
      clipped += !inside;
      ASSERT_EQ(grad[i], inside ? g[i] : 0.0f) << i;
    }
    EXPECT_NEAR(q->masked_fraction(), clipped / double(x.size()), 1e-12);
    // Gradients accumulate over backward calls.
    const float first = q->param_grads()[0];
    q->forward(x.data(), xq.data(), kRows, kCols);
    grad = g;
    q->backward(grad.data(), kRows, kCols);
    EXPECT_NEAR(q->param_grads()[0], 2 * first, 1e-6 * std::fabs(first));
  }
}

TEST(Lsq, UsesAGivenStepAndRejectsOneBit) {
  auto q = make_quantizer(QuantSpec::parse("lsq:2"), QuantRole::Weight);
  q->params()[0] = 0.5f;  // restored from a checkpoint: no re-initialization
  const std::vector<float> x = {0.1f, -0.1f, 0.74f, 0.76f, 5.0f, -5.0f, 0.25f, -0.25f};
  std::vector<float> xq(x.size());
  q->forward(x.data(), xq.data(), 1, 8);
  EXPECT_EQ(q->params()[0], 0.5f);
  // u = x / 0.5 - 1/2; q = round_half_even(u) in [-2, 1]; xq = (q + 1/2) * 0.5
  const std::vector<float> want = {0.25f, -0.25f, 0.75f, 0.75f, 0.75f, -0.75f, 0.25f, -0.25f};
  EXPECT_EQ(xq, want);
  EXPECT_THROW(QuantSpec::parse("lsq:1"), Error);
}

// AdamW can carry a learned step or clip through zero; the quantizers then use its magnitude and
// give the parameter the gradient of that magnitude, so training continues (no error, no flip).
TEST(LsqPact, NegativeLearnedValueActsAsItsMagnitude) {
  for (const char* spec : {"lsq:3", "pact:3"}) {
    SCOPED_TRACE(spec);
    const auto x = test::gaussian(kRows * kCols, 80, 1.1);
    const auto g = test::gaussian(kRows * kCols, 81);
    std::vector<float> xq_pos(x.size()), xq_neg(x.size()), grad_pos = g, grad_neg = g;
    auto pos = make_quantizer(QuantSpec::parse(spec), QuantRole::Input);
    auto neg = make_quantizer(QuantSpec::parse(spec), QuantRole::Input);
    pos->params()[0] = 0.4f;
    neg->params()[0] = -0.4f;
    pos->forward(x.data(), xq_pos.data(), kRows, kCols);
    ASSERT_NO_THROW(neg->forward(x.data(), xq_neg.data(), kRows, kCols));
    EXPECT_EQ(xq_neg, xq_pos);
    pos->backward(grad_pos.data(), kRows, kCols);
    neg->backward(grad_neg.data(), kRows, kCols);
    EXPECT_EQ(grad_neg, grad_pos);
    ASSERT_NE(pos->param_grads()[0], 0.0f);
    EXPECT_EQ(neg->param_grads()[0], -pos->param_grads()[0]);
  }
}

TEST(Pact, GridAndClipGradient) {
  for (int b : {1, 2, 4}) {
    for (bool tight : {false, true}) {
      SCOPED_TRACE(fmt::format("bits {} tight {}", b, tight));
      auto q = make_quantizer(QuantSpec::parse(fmt::format("pact:{}", b)), QuantRole::Input);
      const auto x = test::gaussian(kRows * kCols, 60 + b, 0.9);
      const auto g = test::gaussian(kRows * kCols, 70 + b);
      double ss = 0;
      for (float v : x) ss += double(v) * v;
      const double rms = std::sqrt(ss / double(x.size()));
      if (tight) q->params()[0] = float(0.6 * rms);  // many clipped entries
      std::vector<float> xq(x.size()), grad = g;
      q->forward(x.data(), xq.data(), kRows, kCols);
      const double a0 = q->params()[0];
      if (!tight) EXPECT_NEAR(a0, kAlpha[b] * rms, 1e-6 * a0);  // init ALPHA[b] * rms
      std::set<float> levels(xq.begin(), xq.end());
      EXPECT_LE(levels.size(), size_t(1) << b);
      EXPECT_NEAR(*levels.rbegin(), a0, 1e-6 * a0);  // extreme levels +-alpha
      EXPECT_NEAR(*levels.begin(), -a0, 1e-6 * a0);
      q->backward(grad.data(), kRows, kCols);
      // PACT differentiates F(alpha) = sum g * clip(x, -alpha, alpha) (straight-through rounding).
      auto F = [&](double a) {
        double f = 0;
        for (size_t i = 0; i < x.size(); ++i) f += g[i] * std::clamp(double(x[i]), -a, a);
        return f;
      };
      const double h = 1e-6 * a0;
      const double fd = (F(a0 + h) - F(a0 - h)) / (2 * h);
      EXPECT_NEAR(q->param_grads()[0], fd, 1e-4 * std::fabs(fd) + 1e-5);
      int clipped = 0;
      for (size_t i = 0; i < x.size(); ++i) {
        const bool pass = std::fabs(x[i]) < float(a0);
        clipped += !pass;
        ASSERT_EQ(grad[i], pass ? g[i] : 0.0f) << i;
      }
      EXPECT_GT(clipped, 0);
      EXPECT_NEAR(q->masked_fraction(), clipped / double(x.size()), 1e-12);
    }
  }
}

}  // namespace
}  // namespace quest
