#include <gtest/gtest.h>

#include <cmath>

#include "core/error.h"
#include "train/schedule.h"

namespace quest {
namespace {

TEST(Schedule, OneCycleMatchesTheReference) {
  // torch OneCycleLR(total 100, pct_start 0.1, cos, div 100, final_div 0.1), recomputed here.
  ScheduleConfig s;
  s.peak_lr = 1.0;
  const int64_t total = 100;
  EXPECT_NEAR(learning_rate(s, 0, total), 0.01, 1e-12);   // peak / 100
  EXPECT_NEAR(learning_rate(s, 9, total), 1.0, 1e-12);    // warmup ends at step 9
  EXPECT_NEAR(learning_rate(s, 99, total), 0.1, 1e-12);   // peak / 10 at the last step
  // Half way through warmup: the half cosine's midpoint.
  const double mid = 0.01 + (1.0 - 0.01) * (1 - std::cos(M_PI * 4.5 / 9)) / 2;
  EXPECT_NEAR(learning_rate(s, 4, total) + learning_rate(s, 5, total), 2 * mid, 1e-2);
  const double pct = (54.0 - 9.0) / 90.0;
  EXPECT_NEAR(learning_rate(s, 54, total), 0.1 + 0.9 / 2 * (1 + std::cos(M_PI * pct)), 1e-12);
  for (int64_t i = 1; i < 10; ++i) EXPECT_GT(learning_rate(s, i, total), learning_rate(s, i - 1, total));
  for (int64_t i = 10; i < total; ++i) EXPECT_LT(learning_rate(s, i, total), learning_rate(s, i - 1, total));
}

TEST(Schedule, ConstantAndWsd) {
  ScheduleConfig s;
  s.peak_lr = 2.0;
  s.kind = ScheduleKind::Constant;
  s.warmup_fraction = 0;
  EXPECT_EQ(learning_rate(s, 0, 10), 2.0);
  EXPECT_EQ(learning_rate(s, 9, 10), 2.0);
  s.kind = ScheduleKind::WarmupStableDecay;
  s.warmup_fraction = 0.1;
  s.decay_fraction = 0.2;
  EXPECT_NEAR(learning_rate(s, 0, 100), 0.2, 1e-12);
  EXPECT_NEAR(learning_rate(s, 9, 100), 2.0, 1e-12);
  EXPECT_NEAR(learning_rate(s, 50, 100), 2.0, 1e-12);
  EXPECT_NEAR(learning_rate(s, 79, 100), 2.0, 1e-12);
  EXPECT_NEAR(learning_rate(s, 99, 100), 0.2, 1e-12);
  EXPECT_LT(learning_rate(s, 90, 100), 2.0);
}

TEST(Schedule, ParsesNames) {
  EXPECT_EQ(parse_schedule_kind("wsd"), ScheduleKind::WarmupStableDecay);
  EXPECT_EQ(parse_schedule_kind("onecycle"), ScheduleKind::OneCycle);
  EXPECT_THROW(parse_schedule_kind("cosine-ish"), Error);
}

}  // namespace
}  // namespace quest
