// attention_forward/backward/forward_cached: the double reference, saved probabilities, finite
// differences for q, k and v, and KV-cache decoding against the full forward.
#include "ops/cpu_ops.h"
#include "reference.h"

namespace quest {
namespace {

using test::Vec;

struct AttnCase {
  int64_t B, T, H, HD;
};

class Attention : public ::testing::TestWithParam<AttnCase> {};

TEST_P(Attention, ForwardMatchesReference) {
  const auto [B, T, H, HD] = GetParam();
  const int64_t C = H * HD;
  Rng rng(51);
  auto qkv = test::randn(rng, B * T * 3 * C);
  auto out = test::nan_filled(B * T * C), probs = test::nan_filled(B * H * T * T);
  cpu::attention_forward(out.data(), probs.data(), qkv.data(), B, T, H, HD);
  Vec probs_ref;
  const Vec out_ref = ref::attention(test::to_double(qkv), B, T, H, HD, &probs_ref);
  EXPECT_TRUE(test::all_close(out, out_ref, 1e-6, 1e-5)) << "out";
  EXPECT_TRUE(test::all_close(probs, probs_ref, 1e-7, 1e-5)) << "probs";
  for (int64_t bht = 0; bht < B * H * T; ++bht)  // above the diagonal: exactly 0
    for (int64_t s = bht % T + 1; s < T; ++s) ASSERT_EQ(probs[bht * T + s], 0.f) << bht << "," << s;
}

TEST_P(Attention, BackwardMatchesFiniteDifferences) {
  const auto [B, T, H, HD] = GetParam();
  const int64_t C = H * HD;
  Rng rng(52);
  auto qkv = test::randn(rng, B * T * 3 * C), c = test::randn(rng, B * T * C);
  const Vec g = test::numeric_grad(
      [&](const Vec& x) { return test::functional(c, ref::attention(x, B, T, H, HD)); },
      test::to_double(qkv));
  std::vector<float> out(B * T * C), probs(B * H * T * T);
  cpu::attention_forward(out.data(), probs.data(), qkv.data(), B, T, H, HD);
  auto dqkv = test::nan_filled(B * T * 3 * C);  // overwritten, q, k and v parts
  cpu::attention_backward(dqkv.data(), c.data(), qkv.data(), probs.data(), B, T, H, HD);
  EXPECT_TRUE(test::all_close(dqkv, g, 1e-5, 1e-4));
}

// head_dim 6 exercises the dot product's remainder loop; T = 1 the degenerate sequence.
INSTANTIATE_TEST_SUITE_P(Shapes, Attention,
                         ::testing::Values(AttnCase{2, 7, 2, 8}, AttnCase{1, 5, 3, 6},
                                           AttnCase{2, 1, 1, 4}));

// Longer than the 128-row query blocks of the blocked products, with a partial last block, and
// (T = 1100) long enough that the backward's 16 MiB scratch takes the (batch, head) pairs in two
// groups: the forward against the reference, the backward against the analytic double gradient
// (finite differences would be too slow here; the shapes above check both against them).
TEST(AttentionBasics, LongSequencesAcrossQueryBlocks) {
  for (const int64_t T : {128, 129, 300, 1100}) {
    const int64_t B = 2, H = 2, HD = 8, C = H * HD;
    Rng rng(57);
    auto qkv = test::randn(rng, B * T * 3 * C), c = test::randn(rng, B * T * C);
    auto out = test::nan_filled(B * T * C), probs = test::nan_filled(B * H * T * T);
    cpu::attention_forward(out.data(), probs.data(), qkv.data(), B, T, H, HD);
    Vec probs_ref;
    const Vec out_ref = ref::attention(test::to_double(qkv), B, T, H, HD, &probs_ref);
    EXPECT_TRUE(test::all_close(out, out_ref, 1e-6, 1e-5)) << "out, T=" << T;
    EXPECT_TRUE(test::all_close(probs, probs_ref, 1e-7, 1e-5)) << "probs, T=" << T;
    auto dqkv = test::nan_filled(B * T * 3 * C);
    cpu::attention_backward(dqkv.data(), c.data(), qkv.data(), probs.data(), B, T, H, HD);
    const Vec g = ref::attention_backward(test::to_double(qkv), test::to_double(c), B, T, H, HD);
    EXPECT_TRUE(test::all_close(dqkv, g, 1e-5, 1e-4)) << "dqkv, T=" << T;
  }
}

TEST(AttentionBasics, FirstTokenAttendsOnlyToItself) {
  const int64_t T = 4, H = 2, HD = 4, C = H * HD;
  Rng rng(53);
  auto qkv = test::randn(rng, T * 3 * C);
  std::vector<float> out(T * C), probs(H * T * T);
  cpu::attention_forward(out.data(), probs.data(), qkv.data(), 1, T, H, HD);
  for (int64_t j = 0; j < C; ++j) EXPECT_FLOAT_EQ(out[j], qkv[2 * C + j]);
  for (int64_t h = 0; h < H; ++h) EXPECT_FLOAT_EQ(probs[h * T * T], 1.f);
}

TEST(AttentionBasics, LargeScoresStayFinite) {
  const int64_t B = 1, T = 6, H = 2, HD = 8, C = H * HD;
  Rng rng(54);
  auto qkv = test::randn(rng, B * T * 3 * C, 30.0);  // scores in the hundreds
  std::vector<float> out(B * T * C), probs(B * H * T * T);
  cpu::attention_forward(out.data(), probs.data(), qkv.data(), B, T, H, HD);
  EXPECT_TRUE(test::all_close(out, ref::attention(test::to_double(qkv), B, T, H, HD), 1e-4, 1e-4));
}

TEST(AttentionBasics, IndependentOfThreadCount) {
  const int64_t B = 2, T = 139, H = 3, HD = 8, C = H * HD;  // two query blocks
  Rng rng(55);
  auto qkv = test::randn(rng, B * T * 3 * C), c = test::randn(rng, B * T * C);
  auto run = [&](int threads) {
    std::vector<float> out(B * T * C), probs(B * H * T * T), dqkv(B * T * 3 * C);
    test::with_threads(threads, [&] {
      cpu::attention_forward(out.data(), probs.data(), qkv.data(), B, T, H, HD);
      cpu::attention_backward(dqkv.data(), c.data(), qkv.data(), probs.data(), B, T, H, HD);
    });
    out.insert(out.end(), dqkv.begin(), dqkv.end());
    return out;
  };
  EXPECT_EQ(run(1), run(3));
}

// Split each sequence's qkv into q and the k / v caches, then decode in chunks of the given sizes.
void check_cached(const std::vector<int64_t>& chunks) {
  const int64_t B = 2, H = 2, HD = 8, C = H * HD;
  int64_t T = 0;
  for (int64_t n : chunks) T += n;
  Rng rng(56);
  auto qkv = test::randn(rng, B * T * 3 * C);
  std::vector<float> out(B * T * C), probs(B * H * T * T);
  cpu::attention_forward(out.data(), probs.data(), qkv.data(), B, T, H, HD);
  for (int64_t b = 0; b < B; ++b) {
    std::vector<float> q(T * C), k(T * C), v(T * C), dec = test::nan_filled(T * C);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t j = 0; j < C; ++j) {
        const float* row = &qkv[(b * T + t) * 3 * C];
        q[t * C + j] = row[j], k[t * C + j] = row[C + j], v[t * C + j] = row[2 * C + j];
      }
    int64_t past = 0;
    for (int64_t n : chunks) {  // the caches hold positions 0..past+n-1; later rows stay unread
      cpu::attention_forward_cached(&dec[past * C], &q[past * C], k.data(), v.data(), n, past, H,
                                    HD);
      past += n;
    }
    const std::vector<float> full(out.begin() + b * T * C, out.begin() + (b + 1) * T * C);
    EXPECT_TRUE(test::all_close(dec, test::to_double(full), 1e-6, 1e-6)) << "batch " << b;
  }
}

TEST(AttentionCached, TokenByTokenEqualsFullForward) { check_cached({1, 1, 1, 1, 1, 1, 1}); }
TEST(AttentionCached, PrefillThenDecodeEqualsFullForward) { check_cached({4, 1, 2, 1}); }

TEST(AttentionCached, DoesNotReadPastTheCache) {
  // Keys and values beyond T_past + T_new are NaN: they must not leak into the output.
  const int64_t H = 1, HD = 4, C = H * HD, T = 5;
  Rng rng(57);
  auto q = test::randn(rng, T * C), k = test::randn(rng, T * C), v = test::randn(rng, T * C);
  for (int64_t j = 3 * C; j < T * C; ++j) k[j] = v[j] = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> out(C);
  cpu::attention_forward_cached(out.data(), &q[2 * C], k.data(), v.data(), 1, 2, H, HD);
  for (float x : out) EXPECT_TRUE(std::isfinite(x));
}

}  // namespace
}  // namespace quest
