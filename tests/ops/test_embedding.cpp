// embedding_forward/backward: exact lookup, scatter-add gradient with repeated tokens.
#include "ops/cpu_ops.h"
#include "reference.h"

namespace quest {
namespace {

using test::Vec;

TEST(Embedding, ForwardCopiesTableRows) {
  const int64_t vocab = 9, d = 6;
  Rng rng(21);
  auto table = test::randn(rng, vocab * d);
  const std::vector<int32_t> tokens{3, 0, 8, 3, 5};
  const int64_t N = int64_t(tokens.size());
  auto out = test::nan_filled(N * d);
  cpu::embedding_forward(out.data(), tokens.data(), table.data(), N, d);
  EXPECT_TRUE(test::all_close(out, ref::embedding(tokens, test::to_double(table), d), 0, 0));
}

TEST(Embedding, BackwardMatchesFiniteDifferencesAndAccumulates) {
  const int64_t vocab = 9, d = 6;
  Rng rng(22);
  auto table = test::randn(rng, vocab * d);
  const std::vector<int32_t> tokens{3, 0, 8, 3, 5, 3, 0};  // repeats must add up
  const int64_t N = int64_t(tokens.size());
  auto c = test::randn(rng, N * d);
  const Vec g = test::numeric_grad(
      [&](const Vec& tv) { return test::functional(c, ref::embedding(tokens, tv, d)); },
      test::to_double(table));
  auto dt0 = test::randn(rng, vocab * d), dt = dt0;
  cpu::embedding_backward(dt.data(), c.data(), tokens.data(), N, d);
  EXPECT_TRUE(test::all_close(test::delta(dt, dt0), g, 1e-6, 1e-6));
  // Rows of tokens that do not occur are untouched (bitwise).
  for (int32_t row : {1, 2, 4, 6, 7})
    for (int64_t j = 0; j < d; ++j) EXPECT_EQ(dt[row * d + j], dt0[row * d + j]) << row;
}

TEST(Embedding, BackwardIsIndependentOfThreadCount) {
  const int64_t vocab = 4, d = 200, N = 300;  // several column blocks, many repeats
  Rng rng(23);
  std::vector<int32_t> tokens(N);
  for (auto& t : tokens) t = int32_t(rng.below(vocab));
  auto c = test::randn(rng, N * d);
  std::vector<float> one(vocab * d, 0.f), three(vocab * d, 0.f);
  test::with_threads(1,
                     [&] { cpu::embedding_backward(one.data(), c.data(), tokens.data(), N, d); });
  test::with_threads(3,
                     [&] { cpu::embedding_backward(three.data(), c.data(), tokens.data(), N, d); });
  EXPECT_EQ(one, three);
}

TEST(Embedding, RejectsNegativeTokens) {
  std::vector<float> table(8, 1.f), out(4);
  const std::vector<int32_t> tokens{1, -1};
  EXPECT_THROW(cpu::embedding_forward(out.data(), tokens.data(), table.data(), 2, 2), Error);
  EXPECT_THROW(cpu::embedding_backward(table.data(), out.data(), tokens.data(), 2, 2), Error);
}

}  // namespace
}  // namespace quest
