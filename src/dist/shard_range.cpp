#include "dist/shard_range.h"

#include <algorithm>

#include "core/error.h"

namespace quest {

ShardRange shard_range(int64_t total, int rank, int world) {
  QUEST_CHECK(world >= 1 && rank >= 0 && rank < world, "rank {} of {} is not a rank", rank, world);
  QUEST_CHECK(total >= 0, "cannot shard {} values", total);
  ShardRange s;
  s.total = total;
  s.world = world;
  s.per_rank = (total + world - 1) / world;
  s.begin = std::min(total, int64_t(rank) * s.per_rank);
  s.end = std::min(total, s.begin + s.per_rank);
  return s;
}

}  // namespace quest
