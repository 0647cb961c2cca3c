// fp4 (e2m1) grid and 4:8 pair sparsity (QUEST_SPEC.md section 4).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "quant/alpha.h"
#include "quant/factory.h"
#include "quant/grid.h"
#include "quant/hadamard.h"
#include "quant/quantizers.h"
#include "quant_test_util.h"

namespace quest {
namespace {

TEST(Fp4, RoundingToE2m1) {
  const float cases[][2] = {{0.0f, 0.0f},  {0.2f, 0.0f},  {0.25f, 0.0f}, {0.3f, 0.5f},
                            {0.75f, 1.0f}, {1.25f, 1.0f}, {1.3f, 1.5f},  {1.75f, 2.0f},
                            {2.5f, 2.0f},  {2.6f, 3.0f},  {3.5f, 4.0f},  {5.0f, 4.0f},
                            {5.01f, 6.0f}, {9.0f, 6.0f}};
  for (auto [in, want] : cases) EXPECT_EQ(Fp4Quantizer::round_e2m1(in), want) << in;
}

TEST(Fp4, GridValuesAndTrustMask) {
  const int64_t rows = 16, cols = 512;
  const auto x = test::gaussian(rows * cols, 21, 1.7);
  for (const char* name : {"fp4", "hadamard-fp4"}) {
    SCOPED_TRACE(name);
    auto q = make_quantizer(QuantSpec::parse(name), QuantRole::Input, cols);
    TensorQuantizer* dom = q->uses_hadamard() ? q->hadamard_inner() : q.get();
    auto x_in = x;  // the domain quantizer's input
    if (q->uses_hadamard()) hadamard_transform_rows(x_in.data(), rows, cols);
    std::vector<float> xq(x.size());
    dom->forward(x_in.data(), xq.data(), rows, cols);
    const float levels[] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6};
    for (int64_t r = 0; r < rows; ++r) {
      const double unit = 0.487079 * grid::row_rms(x_in.data() + r * cols, cols);  // spec digits
      for (int64_t i = 0; i < cols; ++i) {
        const int64_t k = r * cols + i;
        const double a = std::fabs(xq[k]) / unit;
        // The nearest level of the e2m1 set, same sign.
        double best = 0;
        for (float l : levels)
          if (std::fabs(l - std::fabs(x_in[k]) / unit) < std::fabs(best - std::fabs(x_in[k]) / unit)) best = l;
        ASSERT_NEAR(a, best, 3e-5) << k;
        if (xq[k] != 0) ASSERT_EQ(std::signbit(xq[k]), std::signbit(x_in[k]));
        // Trust mask: half the largest gap (6 - 4) = 1 unit.
        const bool keep = std::fabs(xq[k] - x_in[k]) <= unit;
        if (std::fabs(std::fabs(xq[k] - x_in[k]) - unit) > 1e-5 * unit)
          ASSERT_EQ(!dom->mask()->test(r, i), keep) << k;
      }
    }
    EXPECT_GT(dom->mask()->count(), 0);  // |x| > 7 units (~3.4 sigma) does occur in 1536 samples
    // The full form is the domain quantizer sandwiched between transforms.
    std::vector<float> full(x.size());
    q->forward(x.data(), full.data(), rows, cols);
    if (q->uses_hadamard()) hadamard_transform_rows(full.data(), rows, cols);
    for (size_t k = 0; k < x.size(); ++k) ASSERT_NEAR(full[k], xq[k], 1e-5) << k;
  }
  EXPECT_THROW(QuantSpec::parse("fp4:3"), Error);
}

TEST(Sparse48, PatternGridAndMask) {
  const int64_t rows = 4, cols = 256;
  const auto x = test::gaussian(rows * cols, 31);
  auto q = make_quantizer(QuantSpec::parse("hadamard-sparse48:4"), QuantRole::Weight, cols);
  ASSERT_TRUE(q->uses_hadamard());
  TensorQuantizer* dom = q->hadamard_inner();
  std::vector<float> xq(x.size());
  dom->forward(x.data(), xq.data(), rows, cols);  // the domain quantizer on (any) rows
  const double t = kAlpha[4] / 15;
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x.data() + r * cols;
    const double rms = grid::row_rms(xr, cols);  // the dense row
    const grid::Grid g = grid::from_rms(4, rms);
    for (int64_t g0 = 0; g0 < cols; g0 += 8) {
      double norm[4];
      int zero_pairs = 0;
      for (int p = 0; p < 4; ++p) {
        const int64_t i = r * cols + g0 + 2 * p;
        norm[p] = std::hypot(double(x[i]), double(x[i + 1]));
        const bool z0 = xq[i] == 0.0f, z1 = xq[i + 1] == 0.0f;
        ASSERT_EQ(z0, z1) << "pairs are zeroed together";
        zero_pairs += z0;
      }
      ASSERT_EQ(zero_pairs, 2) << "row " << r << " group " << g0;
      double kept_min = 1e9, zeroed_max = 0;
      for (int p = 0; p < 4; ++p) {
        const int64_t i = r * cols + g0 + 2 * p;
        if (xq[i] == 0.0f) zeroed_max = std::max(zeroed_max, norm[p]);
        else kept_min = std::min(kept_min, norm[p]);
      }
      ASSERT_LE(zeroed_max, kept_min) << "the 2 smallest-norm pairs are the zeroed ones";
      for (int e = 0; e < 8; ++e) {
        const int64_t i = r * cols + g0 + e;
        if (xq[i] != 0.0f) ASSERT_EQ(xq[i], grid::quantize(x[i], g)) << i;
        const bool keep = std::fabs(xq[i] - x[i]) <= t * rms;  // trust against the sparsified xq
        ASSERT_EQ(!dom->mask()->test(r, g0 + e), keep) << i;
      }
    }
  }
  // Full form: the same pattern in the transform domain.
  std::vector<float> full(x.size()), x_h = x;
  q->forward(x.data(), full.data(), rows, cols);
  hadamard_transform_rows(full.data(), rows, cols);
  hadamard_transform_rows(x_h.data(), rows, cols);
  dom->forward(x_h.data(), xq.data(), rows, cols);
  for (size_t k = 0; k < x.size(); ++k) ASSERT_NEAR(full[k], xq[k], 2e-5) << k;
}

TEST(Sparse48, InvalidUses) {
  try {
    make_quantizer(QuantSpec::parse("hadamard-sparse48:4"), QuantRole::Input, 256);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("weights only"), std::string::npos) << e.what();
  }
  EXPECT_THROW(make_quantizer(QuantSpec::parse("sparse48:4"), QuantRole::Weight, 100), Error);
  auto q = make_quantizer(QuantSpec::parse("sparse48:4"), QuantRole::Weight);
  std::vector<float> x(12, 1.0f);
  EXPECT_THROW(q->forward(x.data(), x.data(), 1, 12), Error);
}

}  // namespace
}  // namespace quest
