// The block Hadamard transform (FWHT) against the dense popcount matrix, and the bit masks.
#include <gtest/gtest.h>

#include <cmath>

#include "core/error.h"
#include "quant/hadamard.h"
#include "quant/mask_bits.h"
#include "quant_test_util.h"

namespace quest {
namespace {

TEST(Hadamard, FwhtEqualsDenseProduct) {
  const int64_t rows = 5, cols = 384;
  auto x = test::gaussian(rows * cols, 1);
  const auto want = test::dense_ht_rows(test::to_double(x), rows, cols);
  hadamard_transform_rows(x.data(), rows, cols);
  double max_err = 0;
  for (size_t i = 0; i < x.size(); ++i) max_err = std::max(max_err, std::fabs(x[i] - want[i]));
  EXPECT_LT(max_err, 2e-6);
}

TEST(Hadamard, BasisVectorsGiveTheMatrixRows) {
  // HT(e_i) must be row i of H exactly (+-1/sqrt(128)); catches a permuted (non-Sylvester) order.
  const auto H = test::dense_hadamard128();
  for (int i : {0, 1, 5, 64, 127}) {
    std::vector<float> e(128, 0.0f);
    e[i] = 1.0f;
    hadamard_transform_rows(e.data(), 1, 128);
    for (int j = 0; j < 128; ++j) ASSERT_NEAR(e[j], H[i * 128 + j], 1e-7) << i << "," << j;
  }
}

TEST(Hadamard, IsItsOwnInverseAndOrthonormal) {
  const int64_t rows = 7, cols = 256;
  const auto x0 = test::gaussian(rows * cols, 2);
  auto x = x0;
  hadamard_transform_rows(x.data(), rows, cols);
  double n0 = 0, n1 = 0;
  for (size_t i = 0; i < x.size(); ++i) n0 += double(x0[i]) * x0[i], n1 += double(x[i]) * x[i];
  EXPECT_NEAR(n1 / n0, 1.0, 1e-6);
  hadamard_transform_rows(x.data(), rows, cols);
  for (size_t i = 0; i < x.size(); ++i) ASSERT_NEAR(x[i], x0[i], 2e-6) << i;
}

TEST(Hadamard, RejectsKNotAMultipleOf128) {
  std::vector<float> x(3 * 200);
  try {
    hadamard_transform_rows(x.data(), 3, 200);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("multiple of 128"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("200"), std::string::npos) << e.what();
  }
}

TEST(MaskBits, CountApplyAndPersistence) {
  MaskBits a, b;
  a.reserve(3, 70);
  a.reset(3, 70);  // 70 columns: two words per row, padded
  b.reset(3, 70);
  EXPECT_EQ(a.words_per_row(), 2);
  for (int64_t c : {0, 63, 64, 69}) MaskBits::set(a.row(1), c);
  MaskBits::set(a.row(2), 5);
  MaskBits::set(b.row(1), 63);
  MaskBits::set(b.row(1), 69);
  MaskBits::set(b.row(0), 3);
  EXPECT_EQ(a.count(), 5);
  EXPECT_DOUBLE_EQ(a.fraction(), 5.0 / 210.0);
  EXPECT_TRUE(a.test(1, 64));
  EXPECT_FALSE(a.test(0, 64));
  EXPECT_DOUBLE_EQ(*MaskBits::persistence(a, b), 2.0 / 5.0);
  MaskBits none;
  none.reset(3, 70);
  EXPECT_FALSE(MaskBits::persistence(none, a).has_value());
  std::vector<float> g(210, 1.0f);
  a.apply(g.data());
  double s = 0;
  for (float v : g) s += v;
  EXPECT_EQ(s, 205.0);
  EXPECT_EQ(g[70 + 69], 0.0f);
  EXPECT_EQ(g[140 + 5], 0.0f);
  // Shapes must match.
  MaskBits other;
  other.reset(2, 70);
  EXPECT_THROW(MaskBits::persistence(a, other), Error);
}

}  // namespace
}  // namespace quest
