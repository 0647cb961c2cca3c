// The grid family (ste, clip, trust and their Hadamard forms) against an independent naive
// implementation of QUEST_SPEC.md section 3, in double with the dense Hadamard matrix.
#include <gtest/gtest.h>

#include <cmath>

#include "quant/alpha.h"
#include "quant/factory.h"
#include "quant/grid.h"
#include "quant/hadamard.h"
#include "quant_test_util.h"

namespace quest {
namespace {

TEST(Grid, RoundHalfEvenAtExactTies) {
  // b = 2, scale 1.5: step 1, levels -1.5 -0.5 0.5 1.5; x / step + 1/2 is a tie for integer x.
  const grid::Grid g2 = grid::make(2, 1.5f);
  ASSERT_EQ(g2.step, 1.0f);
  EXPECT_EQ(grid::quantize(0.0f, g2), -0.5f);   // 0.5 -> 0 (half-up would give +0.5)
  EXPECT_EQ(grid::quantize(1.0f, g2), 1.5f);    // 1.5 -> 2
  EXPECT_EQ(grid::quantize(-1.0f, g2), -0.5f);  // -0.5 -> -0 (half-away would give -1.5)
  EXPECT_EQ(grid::quantize(0.4f, g2), 0.5f);
  EXPECT_EQ(grid::quantize(7.0f, g2), 1.5f);    // clipped
  EXPECT_EQ(grid::quantize(-7.0f, g2), -1.5f);
  // b = 3, scale 3.5: step 1, levels +-0.5 .. +-3.5.
  const grid::Grid g3 = grid::make(3, 3.5f);
  ASSERT_EQ(g3.step, 1.0f);
  EXPECT_EQ(grid::quantize(1.0f, g3), 1.5f);    // 1.5 -> 2
  EXPECT_EQ(grid::quantize(2.0f, g3), 1.5f);    // 2.5 -> 2 (half-up: 2.5)
  EXPECT_EQ(grid::quantize(-2.0f, g3), -2.5f);  // -1.5 -> -2
  EXPECT_EQ(grid::quantize(-3.0f, g3), -2.5f);  // -2.5 -> -2 (half-away: -3.5)
  EXPECT_EQ(grid::quantize(3.5f, g3), 3.5f);
  // b = 1: x / (2 scale) + 1/2 in [0, 1]: the sign, with 0 on the tie going to q = 0 (-scale).
  const grid::Grid g1 = grid::make(1, 0.75f);
  EXPECT_EQ(grid::quantize(0.1f, g1), 0.75f);
  EXPECT_EQ(grid::quantize(-0.1f, g1), -0.75f);
  EXPECT_EQ(grid::quantize(0.0f, g1), -0.75f);
}

TEST(Grid, OneBitIsSignTimesAlphaRms) {
  const int64_t rows = 3, cols = 256;
  const auto x = test::gaussian(rows * cols, 7, 2.5);
  std::vector<float> xq(x.size());
  make_quantizer(QuantSpec::parse("trust:1"), QuantRole::Input)->forward(x.data(), xq.data(), rows, cols);
  for (int64_t r = 0; r < rows; ++r) {
    const double s = kAlpha[1] * grid::row_rms(x.data() + r * cols, cols);
    for (int64_t i = 0; i < cols; ++i) {
      const int64_t k = r * cols + i;
      ASSERT_NEAR(xq[k], (x[k] > 0 ? s : -s), 1e-6 * s) << k;
    }
  }
}

struct Naive {
  std::vector<double> xq_h;    // quantized, in the quantizer's domain
  std::vector<double> margin;  // distance of x / step + 1/2 from a rounding tie
  std::vector<double> mask_margin;  // |deviation - limit| / rms
  std::vector<int> keep;
};

// QUEST_SPEC.md section 3 written out directly (double precision, dense H).
Naive naive_forward(const std::vector<double>& x_h, int64_t rows, int64_t cols, int bits,
                    MaskRule rule) {
  Naive n;
  n.xq_h.resize(x_h.size()), n.margin.resize(x_h.size()), n.mask_margin.resize(x_h.size());
  n.keep.resize(x_h.size());
  for (int64_t r = 0; r < rows; ++r) {
    double ss = 0;
    for (int64_t i = 0; i < cols; ++i) ss += x_h[r * cols + i] * x_h[r * cols + i];
    const double rms = std::sqrt(ss / cols);
    const double scale = kAlpha[bits] * rms + 1e-8;
    const double step = 2 * scale / ((1 << bits) - 1);
    for (int64_t i = 0; i < cols; ++i) {
      const int64_t k = r * cols + i;
      const double v = std::clamp(x_h[k], -scale, scale) / step + 0.5;
      const double q = std::nearbyint(v);
      n.xq_h[k] = q * step - step / 2;
      n.margin[k] = std::fabs(std::fabs(v - std::floor(v)) - 0.5);
      double dev = 0, lim = 1;
      if (rule.type == MaskRule::Type::Clip) dev = std::fabs(x_h[k]), lim = rule.factor * scale;
      if (rule.type == MaskRule::Type::Trust) dev = std::fabs(n.xq_h[k] - x_h[k]), lim = rule.factor * rms;
      n.keep[k] = dev <= lim;
      n.mask_margin[k] = std::fabs(dev - lim) / rms;
    }
  }
  return n;
}

void check_against_naive(const std::string& name, int64_t rows, int64_t cols, uint64_t seed) {
  SCOPED_TRACE(name);
  const QuantSpec spec = QuantSpec::parse(name);
  auto q = make_quantizer(spec, QuantRole::Input, cols);
  const auto x = test::gaussian(rows * cols, seed, 0.7);
  const auto g = test::gaussian(rows * cols, seed + 1);
  std::vector<float> xq(x.size()), grad = g;
  q->forward(x.data(), xq.data(), rows, cols);
  q->backward(grad.data(), rows, cols);

  auto x_h = test::to_double(x);
  if (spec.hadamard) x_h = test::dense_ht_rows(x_h, rows, cols);
  const Naive n = naive_forward(x_h, rows, cols, spec.bits, spec.mask_rule());

  // Forward, compared in the quantizer's domain (HT is its own inverse).
  auto lib_xq_h = xq;
  if (spec.hadamard) hadamard_transform_rows(lib_xq_h.data(), rows, cols);
  // Mask: the library's (in its domain) against the naive one.
  const MaskBits* m = q->mask();
  ASSERT_EQ(m != nullptr, spec.mask_rule().type != MaskRule::Type::None);
  auto keep = n.keep;
  int ambiguous = 0;
  for (int64_t k = 0; k < rows * cols; ++k) {
    if (n.margin[k] > 1e-4) ASSERT_NEAR(lib_xq_h[k], n.xq_h[k], 2e-5) << k;
    if (!m) continue;
    const int lib_keep = !m->test(k / cols, k % cols);
    if (n.mask_margin[k] < 1e-5 || n.margin[k] < 1e-4) {  // too close to call in float
      keep[k] = lib_keep, ++ambiguous;
      continue;
    }
    ASSERT_EQ(lib_keep, n.keep[k]) << "entry " << k;
  }
  EXPECT_LT(ambiguous, 3);
  // Backward: the trust estimator = mask * grad in the quantizer's domain, transformed back.
  auto g_h = test::to_double(g);
  if (spec.hadamard) g_h = test::dense_ht_rows(g_h, rows, cols);
  for (size_t k = 0; k < g_h.size(); ++k) g_h[k] *= keep[k];
  if (spec.hadamard) g_h = test::dense_ht_rows(g_h, rows, cols);
  for (size_t k = 0; k < g_h.size(); ++k) ASSERT_NEAR(grad[k], g_h[k], 2e-5) << k;
  if (m && spec.bits <= 4) EXPECT_GT(m->count(), 0) << "test data should exercise the mask";
}

TEST(Grid, MatchesNaiveImplementation) {
  for (int b : {1, 2, 4, 8}) {
    check_against_naive(fmt::format("hadamard-trust:{}", b), 6, 256, 100 + b);
    check_against_naive(fmt::format("trust:{}", b), 6, 256, 200 + b);
    check_against_naive(fmt::format("hadamard-clip:{}:c=1.1", b), 6, 256, 300 + b);
    check_against_naive(fmt::format("clip:{}", b), 6, 256, 400 + b);
    check_against_naive(fmt::format("ste:{}", b), 6, 256, 500 + b);
    check_against_naive(fmt::format("hadamard-ste:{}", b), 4, 128, 600 + b);
  }
  check_against_naive("hadamard-trust:3:t=0.05", 4, 384, 700);
  check_against_naive("hadamard-trust:1:t=0.7", 4, 256, 701);
  check_against_naive("quest:1:c=1.05", 4, 256, 702);
}

TEST(Grid, OneBitQuestDefaultsToClip13) {
  const MaskRule r = QuantSpec::parse("quest:1").mask_rule();
  EXPECT_EQ(r.type, MaskRule::Type::Clip);
  EXPECT_DOUBLE_EQ(r.factor, 1.3);
  const MaskRule r4 = QuantSpec::parse("quest:4").mask_rule();
  EXPECT_EQ(r4.type, MaskRule::Type::Trust);
  EXPECT_DOUBLE_EQ(r4.factor, kAlpha[4] / 15);
}

TEST(Grid, ForwardAllowsAliasing) {
  const int64_t rows = 4, cols = 256;
  const auto x = test::gaussian(rows * cols, 9);
  for (const char* name : {"quest:4", "trust:2", "hadamard-fp4", "hadamard-sparse48:4", "lsq:4", "pact:3"}) {
    auto a = make_quantizer(QuantSpec::parse(name), QuantRole::Weight, cols);
    auto b = make_quantizer(QuantSpec::parse(name), QuantRole::Weight, cols);
    std::vector<float> out(x.size()), inplace = x;
    a->forward(x.data(), out.data(), rows, cols);
    b->forward(inplace.data(), inplace.data(), rows, cols);
    EXPECT_EQ(out, inplace) << name;
  }
}

}  // namespace
}  // namespace quest
