// ZeRO-1 AdamW against AdamW on one process: every rank computes its own gradients, the sharded
// optimizer must produce the weights (and moments) of AdamW on the summed gradients, with the
// clip computed from the norm of the whole gradient.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/rng.h"
#include "dist/test_world.h"
#include "train/zero_adamw.h"

namespace quest {
namespace {

using test::world;

// Several groups of awkward sizes (no world size divides the total) with mixed weight decay.
struct Arrays {
  std::vector<std::vector<float>> params, grads;
  std::vector<ParamGroup> groups() {
    std::vector<ParamGroup> g;
    for (size_t i = 0; i < params.size(); ++i)
      g.push_back({params[i].data(), grads[i].data(), int64_t(params[i].size()), i % 2 == 0});
    return g;
  }
};

Arrays make_arrays() {
  Arrays a;
  Rng rng(7);
  for (int64_t n : {13, 1, 29, 6}) {
    a.params.emplace_back(size_t(n));
    a.grads.emplace_back(size_t(n), 0.0f);
    for (auto& p : a.params.back()) p = float(rng.normal());
  }
  return a;
}

// Rank r's gradient at step t (so the sum over ranks is known to every rank).
void fill_grads(Arrays& a, int rank, int step) {
  Rng rng(uint64_t(1000 * step + rank));
  for (auto& g : a.grads)
    for (auto& v : g) v = float(rng.normal()) * (rank + 1);
}

TEST(ZeroAdamW, MatchesAdamWOnTheSummedGradient) {
  Communicator& c = world();
  AdamWConfig cfg;
  cfg.grad_clip = 2.0;  // below the norms here: clipping is active and must use the global norm
  Arrays zero = make_arrays(), ref = make_arrays();
  ZeroAdamW zopt(cfg, zero.groups(), c);
  AdamW opt(cfg, ref.groups());
  for (int step = 0; step < 4; ++step) {
    const double lr = 1e-2 * (step + 1);
    fill_grads(zero, c.rank(), step);
    // The reference: the sum of every rank's gradient, in rank order.
    for (auto& g : ref.grads) std::fill(g.begin(), g.end(), 0.0f);
    Arrays one = make_arrays();
    for (int r = 0; r < c.size(); ++r) {
      fill_grads(one, r, step);
      for (size_t i = 0; i < ref.grads.size(); ++i)
        for (size_t k = 0; k < ref.grads[i].size(); ++k) ref.grads[i][k] += one.grads[i][k];
    }
    const double want = opt.step(lr);
    const double got = zopt.step(lr);
    EXPECT_NEAR(got, want, 1e-5 * want) << "step " << step;
    EXPECT_GT(want, cfg.grad_clip);
    for (size_t i = 0; i < ref.params.size(); ++i)
      for (size_t k = 0; k < ref.params[i].size(); ++k)
        ASSERT_NEAR(zero.params[i][k], ref.params[i][k], 1e-6) << "step " << step << " group " << i << " [" << k << "]";
  }
  EXPECT_EQ(zopt.step_count(), 4);
  const std::vector<float> m = zopt.gather_m(), v = zopt.gather_v();
  ASSERT_EQ(m.size(), opt.m().size());
  for (size_t i = 0; i < m.size(); ++i) {
    EXPECT_NEAR(m[i], opt.m()[i], 1e-5) << i;
    EXPECT_NEAR(v[i], opt.v()[i], 1e-4 * std::abs(opt.v()[i]) + 1e-6) << i;
  }
}

TEST(ZeroAdamW, EachRankKeepsOnlyItsShardOfRestoredMoments) {
  Communicator& c = world();
  Arrays a = make_arrays();
  ZeroAdamW zopt(AdamWConfig{}, a.groups(), c);
  const int64_t n = zopt.state_size();
  EXPECT_EQ(n, 13 + 1 + 29 + 6);
  EXPECT_LE(zopt.shard().size(), (n + c.size() - 1) / c.size());
  std::vector<float> m(static_cast<size_t>(n)), v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) m[size_t(i)] = float(i), v[size_t(i)] = float(2 * i);
  zopt.set_moments(m, v);
  EXPECT_EQ(zopt.gather_m(), m);
  EXPECT_EQ(zopt.gather_v(), v);
  // A shorter state (the model's part only, after a quantization change): the rest is zero.
  zopt.set_moments(std::span(m).first(10), std::span(v).first(10));
  const std::vector<float> got = zopt.gather_m();
  for (int64_t i = 0; i < n; ++i) EXPECT_EQ(got[size_t(i)], i < 10 ? float(i) : 0.0f) << i;
}

}  // namespace
}  // namespace quest
