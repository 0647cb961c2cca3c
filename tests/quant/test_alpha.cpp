// The ALPHA table re-derived numerically, the number of grid levels, and the masked fraction on
// Gaussian data (QUEST_SPEC.md section 3).
#include <gtest/gtest.h>

#include <cmath>
#include <algorithm>

#include "quant/alpha.h"
#include "quant/factory.h"
#include "quant/grid.h"
#include "quant/hadamard.h"
#include "quant_test_util.h"

namespace quest {
namespace {

double phi(double x) { return std::exp(-0.5 * x * x) / std::sqrt(2.0 * M_PI); }

// Composite Simpson of (x - c)^2 phi(x) over [a, b].
double cell_mse(double a, double b, double c, int n) {
  const double h = (b - a) / n;
  double s = 0;
  for (int i = 0; i <= n; ++i) {
    const double x = a + i * h;
    const double f = (x - c) * (x - c) * phi(x);
    s += f * (i == 0 || i == n ? 1 : (i % 2 ? 4 : 2));
  }
  return s * h / 3;
}

// E[(x - Q(x))^2] for x ~ N(0,1) and the centered 2^b-level grid with extreme levels +-alpha, by
// numerical integration over the positive half (the grid and the density are symmetric).
double gaussian_mse(int bits, double alpha) {
  const int n = 1 << bits;
  const double step = 2 * alpha / (n - 1);
  double total = 0;
  // Positive levels (k + 1/2) * step, k = 0 .. n/2 - 1; cell of level k is [k step, (k+1) step],
  // the last one extends to +infinity (cut at 12: phi(12) ~ 1e-32).
  for (int k = 0; k < n / 2; ++k) {
    const double lo = k * step, c = (k + 0.5) * step;
    const bool last = k == n / 2 - 1;
    const double hi = last ? 12.0 : (k + 1) * step;
    total += cell_mse(lo, hi, c, last ? 4000 : 200);
  }
  return 2 * total;
}

double golden_min(int bits) {
  const double g = (std::sqrt(5.0) - 1) / 2;
  double a = 0.2, b = 6.0;
  double c = b - g * (b - a), d = a + g * (b - a);
  double fc = gaussian_mse(bits, c), fd = gaussian_mse(bits, d);
  while (b - a > 1e-9) {
    if (fc < fd) {
      b = d, d = c, fd = fc;
      c = b - g * (b - a), fc = gaussian_mse(bits, c);
    } else {
      a = c, c = d, fc = fd;
      d = a + g * (b - a), fd = gaussian_mse(bits, d);
    }
  }
  return 0.5 * (a + b);
}

TEST(Alpha, TableIsTheGaussianMseOptimum) {
  // Finding: the spec's constants for b = 6..8 (the reference's) sit 0.04%, 0.28% and 0.96% below
  // the true optimum of this objective (checked independently with the closed-form cell integrals),
  // while their MSE is within 0.15% of the optimal MSE (the objective is flat there). quest keeps
  // the spec's constants (its masked-fraction table is computed from them); the test pins both facts.
  const double derived_high[9] = {0, 0, 0, 0, 0, 0, 3.277985011, 3.611097588, 3.922204977};
  for (int b = 1; b <= 8; ++b) {
    const double alpha = golden_min(b);
    if (b <= 5) {
      EXPECT_NEAR(alpha / kAlpha[b], 1.0, 1e-4) << "bits " << b << ": derived " << alpha;
    } else {
      EXPECT_NEAR(alpha / derived_high[b], 1.0, 1e-6) << "bits " << b << ": derived " << alpha;
      EXPECT_GT(alpha / kAlpha[b] - 1, 1e-4) << "bits " << b;
    }
    const double excess = gaussian_mse(b, kAlpha[b]) / gaussian_mse(b, alpha) - 1;
    EXPECT_GE(excess, -1e-12);
    EXPECT_LT(excess, 2e-3) << "bits " << b;
  }
  EXPECT_NEAR(kAlpha[1], std::sqrt(2 / M_PI), 1e-8);  // the spec's digits: sqrt(2/pi) to 3e-9
}

// One large Gaussian sample shared by the statistical tests: long rows so the per-row rms is
// within ~0.3% of 1 (the far tails of b = 8 are sensitive to it).
struct Sample {
  static constexpr int64_t rows = 128, cols = 131072;
  std::vector<float> x = test::gaussian(rows * cols, 12345);
  std::vector<float> xq = std::vector<float>(size_t(rows * cols));
};
Sample& sample() {
  static Sample s;
  return s;
}

TEST(Alpha, ExactlyTwoToTheBLevelsPerRow) {
  auto& s = sample();
  for (const char* kind : {"trust", "hadamard-trust", "ste", "clip"}) {
    for (int b = 1; b <= 8; ++b) {
      // The levels next to the extremes are rare at 7-8 bits (~1e-5 per entry): use 2M-long rows.
      const int64_t cols = b >= 7 ? int64_t(1) << 21 : int64_t(1) << 17, rows = b >= 7 ? 1 : 2;
      auto q = make_quantizer(QuantSpec::parse(fmt::format("{}:{}", kind, b)), QuantRole::Input);
      if (q->uses_hadamard()) {  // the grid lives in the transform domain: quantize HT(x) there
        std::vector<float> x_h(s.x.begin(), s.x.begin() + rows * cols);
        hadamard_transform_rows(x_h.data(), rows, cols);
        q->hadamard_inner()->forward(x_h.data(), s.xq.data(), rows, cols);
      } else {
        q->forward(s.x.data(), s.xq.data(), rows, cols);
      }
      for (int64_t r = 0; r < rows; ++r) {
        std::vector<float> levels(s.xq.begin() + r * cols, s.xq.begin() + (r + 1) * cols);
        std::sort(levels.begin(), levels.end());
        levels.erase(std::unique(levels.begin(), levels.end()), levels.end());
        ASSERT_EQ(levels.size(), size_t(1) << b) << kind << ":" << b << " row " << r;
        if (std::string(kind) == "hadamard-trust") continue;  // levels live in the HT domain
        const double rms = grid::row_rms(s.x.data() + r * cols, cols);
        const grid::Grid g = grid::from_rms(b, rms);
        EXPECT_NEAR(levels.back(), g.scale, 1e-6 * g.scale);  // extreme levels are +-scale
        EXPECT_NEAR(levels.front(), -g.scale, 1e-6 * g.scale);
        EXPECT_FALSE(std::binary_search(levels.begin(), levels.end(), 0.0f)) << "no zero level";
        for (float v : levels) {  // each level is (k + 1/2) * step
          const double k = v / g.step - 0.5;
          ASSERT_NEAR(k, std::round(k), 1e-3) << v;
        }
      }
    }
  }
}

TEST(Alpha, MaskedFractionMatchesTheSpecTable) {
  auto& s = sample();
  // QUEST_SPEC.md section 3 table (percent), b = 2..8.
  const double table[9] = {0, 0, 4.64, 1.91, 0.73, 0.26, 0.087, 0.028, 0.0096};
  for (int b = 2; b <= 8; ++b) {
    // The table is the two-sided Gaussian tail beyond scale * 2^b / (2^b - 1).
    const double t = kAlpha[b] * (1 << b) / ((1 << b) - 1);
    EXPECT_NEAR(std::erfc(t / std::sqrt(2.0)) * 100 / table[b], 1.0, 0.02) << b;
    auto q = make_quantizer(QuantSpec::parse(fmt::format("trust:{}", b)), QuantRole::Input);
    q->forward(s.x.data(), s.xq.data(), s.rows, s.cols);
    const double got = q->masked_fraction() * 100;
    EXPECT_NEAR(got / table[b], 1.0, 0.10) << "bits " << b << ": " << got << "%";
  }
  // Through the Hadamard transform (Gaussian in, Gaussian out), on part of the sample.
  for (int b : {2, 4}) {
    auto q = make_quantizer(QuantSpec::parse(fmt::format("hadamard-trust:{}", b)), QuantRole::Input);
    q->forward(s.x.data(), s.xq.data(), 32, s.cols);
    EXPECT_NEAR(q->masked_fraction() * 100 / table[b], 1.0, 0.10) << "hadamard bits " << b;
  }
  // 1 bit: clip mask |x| <= 1.3 * ALPHA[1] * rms, about 30% masked.
  for (const char* name : {"quest:1", "trust:1"}) {
    auto q = make_quantizer(QuantSpec::parse(name), QuantRole::Input);
    q->forward(s.x.data(), s.xq.data(), 16, s.cols);
    EXPECT_NEAR(q->masked_fraction() / 0.30, 1.0, 0.10) << name << " " << q->masked_fraction();
    EXPECT_NEAR(q->masked_fraction(), std::erfc(1.3 * kAlpha[1] / std::sqrt(2.0)), 0.005);
  }
}

}  // namespace
}  // namespace quest
