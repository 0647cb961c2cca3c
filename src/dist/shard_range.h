#pragma once
// How a flat vector of `total` values is split across ranks for ZeRO-1: equal blocks of
// per_rank = ceil(total / world) values (reduce-scatter and all-gather move equal blocks), the
// last ones padded; rank r owns [begin, end) of the real values, possibly fewer than per_rank.
#include <cstdint>

namespace quest {

struct ShardRange {
  int world = 1;
  int64_t total = 0, per_rank = 0;
  int64_t begin = 0, end = 0;  // this rank's real values
  int64_t padded() const { return per_rank * world; }
  int64_t size() const { return end - begin; }
};

ShardRange shard_range(int64_t total, int rank, int world);

}  // namespace quest
