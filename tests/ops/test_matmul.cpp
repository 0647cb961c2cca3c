// matmul_forward/backward against the double reference and finite differences.
#include "ops/cpu_ops.h"
#include "reference.h"

namespace quest {
namespace {

using test::Vec;

struct MatmulCase {
  int64_t N, K, M;
};

class Matmul : public ::testing::TestWithParam<MatmulCase> {};

TEST_P(Matmul, ForwardMatchesReferenceAndOverwrites) {
  const auto [N, K, M] = GetParam();
  Rng rng(11);
  auto x = test::randn(rng, N * K), w = test::randn(rng, M * K);
  auto out = test::nan_filled(N * M);  // every element must be written
  cpu::matmul_forward(out.data(), x.data(), w.data(), N, K, M);
  EXPECT_TRUE(test::all_close(out, ref::matmul(test::to_double(x), test::to_double(w), N, K, M),
                              1e-5, 1e-5));
}

TEST_P(Matmul, BackwardMatchesFiniteDifferences) {
  const auto [N, K, M] = GetParam();
  Rng rng(12);
  auto x = test::randn(rng, N * K), w = test::randn(rng, M * K), c = test::randn(rng, N * M);
  const Vec xd = test::to_double(x), wd = test::to_double(w);
  const Vec gx = test::numeric_grad(
      [&](const Vec& xv) { return test::functional(c, ref::matmul(xv, wd, N, K, M)); }, xd);
  const Vec gw = test::numeric_grad(
      [&](const Vec& wv) { return test::functional(c, ref::matmul(xd, wv, N, K, M)); }, wd);

  auto dx = test::nan_filled(N * K);             // overwritten
  auto dw0 = test::randn(rng, M * K), dw = dw0;  // accumulates onto what is there
  cpu::matmul_backward(dx.data(), dw.data(), c.data(), x.data(), w.data(), N, K, M);
  EXPECT_TRUE(test::all_close(dx, gx, 1e-4, 1e-4)) << "dx";
  EXPECT_TRUE(test::all_close(test::delta(dw, dw0), gw, 1e-4, 1e-4)) << "dw += dout^T x";
}

INSTANTIATE_TEST_SUITE_P(Shapes, Matmul,
                         ::testing::Values(MatmulCase{5, 7, 3}, MatmulCase{1, 4, 9},
                                           MatmulCase{17, 33, 12}));

TEST(Matmul, NullGradientsAreSkipped) {
  const int64_t N = 4, K = 6, M = 5;
  Rng rng(13);
  auto x = test::randn(rng, N * K), w = test::randn(rng, M * K), c = test::randn(rng, N * M);
  std::vector<float> dx_both(N * K), dw_both(M * K, 0.f), dx_only(N * K), dw_only(M * K, 0.f);
  cpu::matmul_backward(dx_both.data(), dw_both.data(), c.data(), x.data(), w.data(), N, K, M);
  cpu::matmul_backward(dx_only.data(), nullptr, c.data(), x.data(), w.data(), N, K, M);
  cpu::matmul_backward(nullptr, dw_only.data(), c.data(), x.data(), w.data(), N, K, M);
  EXPECT_EQ(dx_only, dx_both);
  EXPECT_EQ(dw_only, dw_both);
}

TEST(Matmul, WeightGradientAccumulatesOverCalls) {
  const int64_t N = 3, K = 4, M = 2;
  Rng rng(14);
  auto x = test::randn(rng, N * K), w = test::randn(rng, M * K), c = test::randn(rng, N * M);
  std::vector<float> once(M * K, 0.f), twice(M * K, 0.f);
  cpu::matmul_backward(nullptr, once.data(), c.data(), x.data(), w.data(), N, K, M);
  cpu::matmul_backward(nullptr, twice.data(), c.data(), x.data(), w.data(), N, K, M);
  cpu::matmul_backward(nullptr, twice.data(), c.data(), x.data(), w.data(), N, K, M);
  for (size_t i = 0; i < once.size(); ++i) EXPECT_FLOAT_EQ(twice[i], 2 * once[i]) << i;
}

TEST(Matmul, RejectsNegativeShapes) {
  float dummy = 0.f;
  EXPECT_THROW(cpu::matmul_forward(&dummy, &dummy, &dummy, -1, 1, 1), Error);
}

}  // namespace
}  // namespace quest
