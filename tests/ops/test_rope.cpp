// rope_forward/backward: a hand-computed rotation, the double reference, finite differences,
// backward(forward(x)) == x, and consistency of pos0 with the position inside the sequence.
#include "ops/cpu_ops.h"
#include "reference.h"

namespace quest {
namespace {

using test::Vec;
constexpr int64_t B = 2, T = 7, H = 2, HD = 8, C = H * HD;
constexpr float kTheta = 10000.f;

TEST(Rope, HandComputedRotation) {
  // One head of width 4 at position 1: pair 0 turns by 1 rad, pair 1 by 10000^(-1/2) = 0.01 rad.
  std::vector<float> qkv(3 * 4);
  for (int i = 0; i < 12; ++i) qkv[i] = float(i + 1);
  cpu::rope_forward(qkv.data(), 1, 1, 1, 4, kTheta, /*pos0=*/1);
  Vec expected;
  for (int pair = 0; pair < 4; ++pair) {  // q pairs 0, 1 then k pairs 0, 1
    const double x0 = 2 * pair + 1, x1 = 2 * pair + 2, a = pair % 2 == 0 ? 1.0 : 0.01;
    expected.push_back(x0 * std::cos(a) - x1 * std::sin(a));
    expected.push_back(x0 * std::sin(a) + x1 * std::cos(a));
  }
  for (double v : {9, 10, 11, 12}) expected.push_back(v);  // v is not rotated
  EXPECT_TRUE(test::all_close(qkv, expected, 1e-6, 1e-6));
}

TEST(Rope, ForwardMatchesReferenceAndLeavesVAlone) {
  Rng rng(41);
  auto x = test::randn(rng, B * T * 3 * C), y = x;
  cpu::rope_forward(y.data(), B, T, H, HD, kTheta, /*pos0=*/5);
  EXPECT_TRUE(
      test::all_close(y, ref::rope(test::to_double(x), B, T, H, HD, kTheta, 5), 1e-6, 1e-5));
  for (int64_t row = 0; row < B * T; ++row)
    for (int64_t j = 2 * C; j < 3 * C; ++j) ASSERT_EQ(y[row * 3 * C + j], x[row * 3 * C + j]);
}

TEST(Rope, AccurateAtLongPositions) {
  // A float angle would be off by ~pos * 6e-8 rad; computing the angle in double keeps fp32
  // accuracy.
  Rng rng(42);
  auto x = test::randn(rng, 1 * 3 * 3 * C), y = x;
  cpu::rope_forward(y.data(), 1, 3, H, HD, kTheta, /*pos0=*/40000);
  EXPECT_TRUE(
      test::all_close(y, ref::rope(test::to_double(x), 1, 3, H, HD, kTheta, 40000), 2e-6, 2e-6));
}

TEST(Rope, BackwardMatchesFiniteDifferences) {
  Rng rng(43);
  auto x = test::randn(rng, B * T * 3 * C), c = test::randn(rng, B * T * 3 * C);
  const Vec g = test::numeric_grad(
      [&](const Vec& xv) { return test::functional(c, ref::rope(xv, B, T, H, HD, kTheta, 3)); },
      test::to_double(x));
  auto dqkv = c;  // in place: dout in, dinput out
  cpu::rope_backward(dqkv.data(), B, T, H, HD, kTheta, /*pos0=*/3);
  EXPECT_TRUE(test::all_close(dqkv, g, 1e-5, 1e-5));
}

TEST(Rope, BackwardInvertsForward) {
  Rng rng(44);
  auto x = test::randn(rng, B * T * 3 * C), y = x;
  cpu::rope_forward(y.data(), B, T, H, HD, kTheta, 11);
  ASSERT_FALSE(test::all_close(y, test::to_double(x), 1e-3, 0));  // it did rotate
  cpu::rope_backward(y.data(), B, T, H, HD, kTheta, 11);
  EXPECT_TRUE(test::all_close(y, test::to_double(x), 1e-5, 1e-5));
}

TEST(Rope, Pos0ShiftsPositions) {
  // Tokens 3..6 of a sequence rotated from position 0 equal the same tokens rotated alone from
  // pos0 = 3 (what decoding with a KV cache relies on).
  Rng rng(45);
  auto full = test::randn(rng, T * 3 * C);
  std::vector<float> tail(full.begin() + 3 * 3 * C, full.end());
  cpu::rope_forward(full.data(), 1, T, H, HD, kTheta, 0);
  cpu::rope_forward(tail.data(), 1, T - 3, H, HD, kTheta, 3);
  EXPECT_EQ(tail, std::vector<float>(full.begin() + 3 * 3 * C, full.end()));
}

TEST(Rope, RejectsOddHeadDim) {
  std::vector<float> qkv(3 * 3);
  EXPECT_THROW(cpu::rope_forward(qkv.data(), 1, 1, 1, 3, kTheta), Error);
  EXPECT_THROW(cpu::rope_backward(qkv.data(), 1, 1, 1, 3, kTheta), Error);
}

}  // namespace
}  // namespace quest
