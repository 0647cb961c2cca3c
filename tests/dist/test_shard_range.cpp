// How ZeRO-1 splits the optimizer state: equal padded blocks, real values covered exactly once.
#include <gtest/gtest.h>

#include "core/error.h"
#include "dist/shard_range.h"

namespace quest {
namespace {

TEST(ShardRange, BlocksCoverEveryValueOnceWithPadding) {
  for (int world : {1, 2, 3, 4, 7})
    for (int64_t total : {0, 1, 5, 6, 7, 100, 101}) {
      int64_t covered = 0, next = 0;
      for (int r = 0; r < world; ++r) {
        const ShardRange s = shard_range(total, r, world);
        EXPECT_EQ(s.per_rank, (total + world - 1) / world);
        EXPECT_GE(s.padded(), total);
        EXPECT_LT(s.padded() - total, world);
        EXPECT_LE(s.size(), s.per_rank);
        if (s.size() > 0) {
          EXPECT_EQ(s.begin, next) << total << " " << world << " " << r;
          next = s.end;
        }
        covered += s.size();
      }
      EXPECT_EQ(covered, total) << total << " " << world;
      EXPECT_EQ(next, total);
    }
}

TEST(ShardRange, UnevenSplitLeavesTheShortBlockLast) {
  const ShardRange a = shard_range(10, 0, 3), b = shard_range(10, 1, 3), c = shard_range(10, 2, 3);
  EXPECT_EQ(a.begin, 0);
  EXPECT_EQ(a.end, 4);
  EXPECT_EQ(b.begin, 4);
  EXPECT_EQ(b.end, 8);
  EXPECT_EQ(c.begin, 8);
  EXPECT_EQ(c.end, 10);
  EXPECT_EQ(c.padded(), 12);
}

TEST(ShardRange, RejectsBadRanks) {
  EXPECT_THROW(shard_range(10, 2, 2), Error);
  EXPECT_THROW(shard_range(10, -1, 2), Error);
  EXPECT_THROW(shard_range(-1, 0, 1), Error);
}

}  // namespace
}  // namespace quest
