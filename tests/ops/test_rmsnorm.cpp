// rmsnorm_forward/backward: reference values, finite-difference gradients for x and w,
// accumulation into dx and dw, thread-count independence of dw.
#include "ops/cpu_ops.h"
#include "reference.h"

namespace quest {
namespace {

using test::Vec;
constexpr float kEps = 1e-5f;

TEST(RmsNorm, ForwardMatchesReference) {
  const int64_t N = 6, d = 10;
  Rng rng(31);
  auto x = test::randn(rng, N * d), w = test::randn(rng, d);
  x[0 * d + 3] = 0.f;  // a zero entry and a tiny row exercise the eps
  for (int64_t j = 0; j < d; ++j) x[5 * d + j] *= 1e-3f;
  auto out = test::nan_filled(N * d), rstd = test::nan_filled(N);
  cpu::rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), N, d, kEps);
  Vec rstd_ref;
  const Vec out_ref = ref::rmsnorm(test::to_double(x), test::to_double(w), N, d, kEps, &rstd_ref);
  EXPECT_TRUE(test::all_close(out, out_ref, 1e-6, 1e-5)) << "out";
  EXPECT_TRUE(test::all_close(rstd, rstd_ref, 0, 1e-6)) << "rstd";
}

TEST(RmsNorm, BackwardMatchesFiniteDifferencesAndAccumulates) {
  const int64_t N = 5, d = 12;
  Rng rng(32);
  auto x = test::randn(rng, N * d), w = test::randn(rng, d), c = test::randn(rng, N * d);
  const Vec xd = test::to_double(x), wd = test::to_double(w);
  const Vec gx = test::numeric_grad(
      [&](const Vec& xv) { return test::functional(c, ref::rmsnorm(xv, wd, N, d, kEps)); }, xd);
  const Vec gw = test::numeric_grad(
      [&](const Vec& wv) { return test::functional(c, ref::rmsnorm(xd, wv, N, d, kEps)); }, wd);

  std::vector<float> out(N * d), rstd(N);
  cpu::rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), N, d, kEps);
  auto dx0 = test::randn(rng, N * d), dx = dx0;  // both accumulate
  auto dw0 = test::randn(rng, d), dw = dw0;
  cpu::rmsnorm_backward(dx.data(), dw.data(), c.data(), x.data(), w.data(), rstd.data(), N, d);
  EXPECT_TRUE(test::all_close(test::delta(dx, dx0), gx, 1e-5, 1e-4)) << "dx";
  EXPECT_TRUE(test::all_close(test::delta(dw, dw0), gw, 1e-5, 1e-4)) << "dw";

  // A second call adds the same gradients again.
  auto dx1 = dx, dw1 = dw;
  cpu::rmsnorm_backward(dx.data(), dw.data(), c.data(), x.data(), w.data(), rstd.data(), N, d);
  EXPECT_TRUE(test::all_close(test::delta(dx, dx1), gx, 1e-5, 1e-4)) << "dx, second call";
  EXPECT_TRUE(test::all_close(test::delta(dw, dw1), gw, 1e-5, 1e-4)) << "dw, second call";
}

TEST(RmsNorm, WeightGradientIsIndependentOfThreadCount) {
  const int64_t N = 61, d = 130;  // three column blocks, uneven
  Rng rng(33);
  auto x = test::randn(rng, N * d), w = test::randn(rng, d), c = test::randn(rng, N * d);
  std::vector<float> out(N * d), rstd(N);
  cpu::rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), N, d, kEps);
  std::vector<float> dx1(N * d, 0.f), dw1(d, 0.f), dx3(N * d, 0.f), dw3(d, 0.f);
  test::with_threads(1, [&] {
    cpu::rmsnorm_backward(dx1.data(), dw1.data(), c.data(), x.data(), w.data(), rstd.data(), N, d);
  });
  test::with_threads(3, [&] {
    cpu::rmsnorm_backward(dx3.data(), dw3.data(), c.data(), x.data(), w.data(), rstd.data(), N, d);
  });
  EXPECT_EQ(dw1, dw3);
  EXPECT_EQ(dx1, dx3);
}

}  // namespace
}  // namespace quest
