// The vector kernels behind the ops (ops/cpu/simd.h): the exponential's accuracy, its scalar and
// vector forms agreeing bit for bit, and the AVX2 exponential-and-sum returning the same bits as
// the portable one.
#include <cmath>
#include <cstring>
#include <limits>

#include "ops/cpu/simd.h"
#include "reference.h"

namespace quest {
namespace {

namespace simd = cpu::simd;

bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof(a)) == 0; }
bool same_bits(double a, double b) { return std::memcmp(&a, &b, sizeof(a)) == 0; }

// Within 1 ulp of the exact value over the normal range; the vector lanes equal the scalar form.
TEST(Simd, ExpIsAccurateAndScalarEqualsVector) {
  double worst = 0.0;
  float worst_x = 0.0f;
  for (float x = -87.0f; x < 88.3f; x += 0.000731f) {
    const float lanes[4] = {x, -x * 0.5f, x * 0.25f, x + 0.0001f};
    const simd::vf v = simd::exp(simd::load(lanes));
    for (int i = 0; i < 4; ++i) {
      const float xi = lanes[i], e = simd::exp_scalar(xi);
      ASSERT_TRUE(same_bits(v[i], e)) << xi;
      const double exact = std::exp(double(xi));
      const float fe = float(exact);
      const double ulp = double(std::nextafter(fe, INFINITY)) - double(fe);
      const double err = std::fabs(double(e) - exact) / ulp;
      if (err > worst) worst = err, worst_x = xi;
    }
  }
  EXPECT_LE(worst, 1.0) << "at x = " << worst_x;
}

TEST(Simd, ExpEdgeCases) {
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(simd::exp_scalar(0.0f), 1.0f);
  EXPECT_EQ(simd::exp_scalar(-inf), 0.0f);
  EXPECT_EQ(simd::exp_scalar(-100.0f), 0.0f);
  EXPECT_EQ(simd::exp_scalar(inf), inf);
  EXPECT_EQ(simd::exp_scalar(89.0f), inf);
  EXPECT_TRUE(std::isnan(simd::exp_scalar(std::nanf(""))));
  const float lanes[4] = {-inf, inf, std::nanf(""), -100.0f};
  const simd::vf v = simd::exp(simd::load(lanes));
  EXPECT_EQ(v[0], 0.0f);
  EXPECT_EQ(v[1], inf);
  EXPECT_TRUE(std::isnan(v[2]));
  EXPECT_EQ(v[3], 0.0f);
}

#if defined(QUEST_SIMD_AVX2_PATH)
TEST(Simd, Avx2ExpShiftSumEqualsPortableBitForBit) {
  if (!simd::has_avx2()) GTEST_SKIP() << "no AVX2 on this CPU";
  Rng rng(91);
  for (int64_t n : {0, 1, 7, 8, 9, 15, 16, 17, 31, 100, 1000, 50257}) {
    // Exponentials from 1 down to e^-60 ~ 2^-87: far too wide for the double sums to stay exact,
    // so any change in the order of the additions shows in the result.
    std::vector<float> x(static_cast<size_t>(n));
    for (auto& v : x) v = float(-60.0 * rng.uniform());
    std::vector<float> a(static_cast<size_t>(n)), b(static_cast<size_t>(n));
    const float shift = 0.0f;
    const double sa = simd::exp_shift_sum_portable(a.data(), x.data(), shift, n);
    const double sb = simd::exp_shift_sum_avx2(b.data(), x.data(), shift, n);
    EXPECT_TRUE(same_bits(sa, sb)) << "n = " << n << ": " << sa << " vs " << sb;
    for (int64_t j = 0; j < n; ++j) ASSERT_TRUE(same_bits(a[j], b[j])) << n << " " << j;
    // Sum only (no output), in place.
    EXPECT_TRUE(same_bits(simd::exp_shift_sum_avx2(nullptr, x.data(), shift, n), sa));
    EXPECT_TRUE(same_bits(simd::exp_shift_sum_avx2(x.data(), x.data(), shift, n), sa));
  }
  // Underflow to 0 and overflow to inf take the same path too.
  std::vector<float> x(40, 1.0f), a(40), b(40);
  x[3] = -200.0f, x[11] = 95.0f, x[35] = 100.0f;
  EXPECT_EQ(simd::exp_shift_sum_portable(a.data(), x.data(), 0.0f, 40),
            simd::exp_shift_sum_avx2(b.data(), x.data(), 0.0f, 40));
  EXPECT_EQ(a, b);
  EXPECT_EQ(a[3], 0.0f);
  EXPECT_TRUE(std::isinf(a[11]) && std::isinf(a[35]));
}
#endif

}  // namespace
}  // namespace quest
