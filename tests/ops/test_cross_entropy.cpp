// cross_entropy: loss against the double reference, gradient against finite differences,
// padding columns ignored, in-place gradient, optional outputs, stability, bad targets.
#include "ops/cpu_ops.h"
#include "reference.h"

namespace quest {
namespace {

using test::Vec;
constexpr int64_t N = 6, V = 11, Vp = 16;

struct Problem {
  std::vector<float> logits;
  std::vector<int32_t> targets;
};

Problem make_problem(uint64_t seed, int64_t n = N) {
  Rng rng(seed);
  Problem p{test::randn(rng, n * Vp, 2.0), std::vector<int32_t>(n)};
  for (auto& t : p.targets) t = int32_t(rng.below(V));
  return p;
}

TEST(CrossEntropy, LossMatchesReference) {
  const auto p = make_problem(71);
  auto losses = test::nan_filled(N);
  const double total =
      cpu::cross_entropy(nullptr, losses.data(), p.logits.data(), p.targets.data(), N, V, Vp, 1.f);
  Vec row_ref;
  const double total_ref =
      ref::cross_entropy(test::to_double(p.logits), p.targets, N, V, Vp, &row_ref);
  EXPECT_NEAR(total, total_ref, 1e-9 * total_ref);
  EXPECT_TRUE(test::all_close(losses, row_ref, 0, 1e-6));
}

TEST(CrossEntropy, GradientMatchesFiniteDifferences) {
  const auto p = make_problem(72);
  const float scale = 0.25f;
  Vec g =
      test::numeric_grad([&](const Vec& l) { return ref::cross_entropy(l, p.targets, N, V, Vp); },
                         test::to_double(p.logits));
  for (auto& x : g) x *= scale;
  auto dlogits = test::nan_filled(N * Vp);
  cpu::cross_entropy(dlogits.data(), nullptr, p.logits.data(), p.targets.data(), N, V, Vp, scale);
  EXPECT_TRUE(test::all_close(dlogits, g, 1e-7, 1e-5));
}

TEST(CrossEntropy, PaddingColumnsAreIgnored) {
  auto p = make_problem(73);
  std::vector<float> g1(N * Vp), g2 = test::nan_filled(N * Vp), l1(N), l2(N);
  const double t1 =
      cpu::cross_entropy(g1.data(), l1.data(), p.logits.data(), p.targets.data(), N, V, Vp, 1.f);
  Rng rng(74);
  for (int64_t n = 0; n < N; ++n)  // huge padding logits would dominate if they were included
    for (int64_t j = V; j < Vp; ++j) p.logits[n * Vp + j] = float(1e4 * (1.0 + rng.uniform()));
  const double t2 =
      cpu::cross_entropy(g2.data(), l2.data(), p.logits.data(), p.targets.data(), N, V, Vp, 1.f);
  EXPECT_EQ(t1, t2);
  EXPECT_EQ(l1, l2);
  EXPECT_EQ(g1, g2);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t j = V; j < Vp; ++j) EXPECT_EQ(g2[n * Vp + j], 0.f) << n << "," << j;
}

TEST(CrossEntropy, InPlaceGradientEqualsSeparate) {
  const auto p = make_problem(75);
  std::vector<float> g(N * Vp), inplace = p.logits, l1(N), l2(N);
  const double t1 =
      cpu::cross_entropy(g.data(), l1.data(), p.logits.data(), p.targets.data(), N, V, Vp, 0.5f);
  const double t2 = cpu::cross_entropy(inplace.data(), l2.data(), inplace.data(), p.targets.data(),
                                       N, V, Vp, 0.5f);
  EXPECT_EQ(t1, t2);
  EXPECT_EQ(l1, l2);
  EXPECT_EQ(g, inplace);
}

TEST(CrossEntropy, OptionalOutputsDoNotChangeTheLoss) {
  const auto p = make_problem(76);
  std::vector<float> g(N * Vp), l(N);
  const double bare =
      cpu::cross_entropy(nullptr, nullptr, p.logits.data(), p.targets.data(), N, V, Vp, 1.f);
  const double full =
      cpu::cross_entropy(g.data(), l.data(), p.logits.data(), p.targets.data(), N, V, Vp, 1.f);
  EXPECT_EQ(bare, full);
  double sum = 0;
  for (float x : l) sum += x;
  EXPECT_NEAR(sum, full, 1e-5 * full);
  for (int64_t n = 0; n < N; ++n) {  // each gradient row sums to 0 (softmax minus one-hot)
    double s = 0;
    for (int64_t j = 0; j < Vp; ++j) s += g[n * Vp + j];
    EXPECT_NEAR(s, 0.0, 1e-6) << n;
  }
}

TEST(CrossEntropy, StableForLargeLogits) {
  auto p = make_problem(77);
  for (int64_t n = 0; n < N; ++n) p.logits[n * Vp + (n % V)] = 1000.f + float(n);  // exp overflows
  std::vector<float> g(N * Vp), l(N);
  const double total =
      cpu::cross_entropy(g.data(), l.data(), p.logits.data(), p.targets.data(), N, V, Vp, 1.f);
  Vec row_ref;
  const double total_ref =
      ref::cross_entropy(test::to_double(p.logits), p.targets, N, V, Vp, &row_ref);
  ASSERT_TRUE(std::isfinite(total));
  EXPECT_NEAR(total, total_ref, 1e-9 * total_ref);
  EXPECT_TRUE(test::all_close(l, row_ref, 1e-6, 1e-6));
  for (float x : g) ASSERT_TRUE(std::isfinite(x));
}

TEST(CrossEntropy, IndependentOfThreadCount) {
  const int64_t n = 37;
  const auto p = make_problem(78, n);
  double t1 = 0, t3 = 0;
  test::with_threads(1, [&] {
    t1 = cpu::cross_entropy(nullptr, nullptr, p.logits.data(), p.targets.data(), n, V, Vp, 1.f);
  });
  test::with_threads(3, [&] {
    t3 = cpu::cross_entropy(nullptr, nullptr, p.logits.data(), p.targets.data(), n, V, Vp, 1.f);
  });
  EXPECT_EQ(t1, t3);
}

TEST(CrossEntropy, RejectsTargetsOutsideTheVocabulary) {
  auto p = make_problem(79);
  p.targets[2] = int32_t(V);  // a padding column is not a valid target
  EXPECT_THROW(
      cpu::cross_entropy(nullptr, nullptr, p.logits.data(), p.targets.data(), N, V, Vp, 1.f),
      Error);
  p.targets[2] = -1;
  EXPECT_THROW(
      cpu::cross_entropy(nullptr, nullptr, p.logits.data(), p.targets.data(), N, V, Vp, 1.f),
      Error);
}

}  // namespace
}  // namespace quest
