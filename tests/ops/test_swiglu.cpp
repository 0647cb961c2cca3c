// swiglu_forward/backward: reference values, finite differences for a and b, extreme inputs.
#include "ops/cpu_ops.h"
#include "reference.h"

namespace quest {
namespace {

using test::Vec;

TEST(SwiGlu, ForwardMatchesReference) {
  const int64_t n = 50;
  Rng rng(61);
  auto a = test::randn(rng, n, 3.0), b = test::randn(rng, n);
  auto out = test::nan_filled(n);
  cpu::swiglu_forward(out.data(), a.data(), b.data(), n);
  EXPECT_TRUE(
      test::all_close(out, ref::swiglu(test::to_double(a), test::to_double(b)), 1e-7, 1e-6));
}

TEST(SwiGlu, BackwardMatchesFiniteDifferences) {
  const int64_t n = 40;
  Rng rng(62);
  auto a = test::randn(rng, n, 3.0), b = test::randn(rng, n), c = test::randn(rng, n);
  const Vec ad = test::to_double(a), bd = test::to_double(b);
  const Vec ga = test::numeric_grad(
      [&](const Vec& av) { return test::functional(c, ref::swiglu(av, bd)); }, ad);
  const Vec gb = test::numeric_grad(
      [&](const Vec& bv) { return test::functional(c, ref::swiglu(ad, bv)); }, bd);
  auto da = test::nan_filled(n), db = test::nan_filled(n);  // overwritten
  cpu::swiglu_backward(da.data(), db.data(), c.data(), a.data(), b.data(), n);
  EXPECT_TRUE(test::all_close(da, ga, 1e-6, 1e-5)) << "da";
  EXPECT_TRUE(test::all_close(db, gb, 1e-6, 1e-5)) << "db";
}

TEST(SwiGlu, ExtremeInputsAreFinite) {
  const std::vector<float> a{-200.f, -90.f, 90.f, 200.f}, b(4, 1.f), g(4, 1.f);
  std::vector<float> out(4), da(4), db(4);
  cpu::swiglu_forward(out.data(), a.data(), b.data(), 4);
  cpu::swiglu_backward(da.data(), db.data(), g.data(), a.data(), b.data(), 4);
  EXPECT_TRUE(test::all_close(out, Vec{0, 0, 90, 200}, 1e-6, 1e-6));  // silu -> 0 and -> a
  EXPECT_TRUE(test::all_close(da, Vec{0, 0, 1, 1}, 1e-6, 1e-6));      // silu' -> 0 and -> 1
  EXPECT_TRUE(test::all_close(db, Vec{0, 0, 90, 200}, 1e-6, 1e-6));
}

}  // namespace
}  // namespace quest
