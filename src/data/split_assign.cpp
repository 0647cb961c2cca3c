#include "data/split_assign.h"

#include <algorithm>
#include <cmath>
#include <queue>
#include <utility>

#include "core/error.h"

namespace quest {

namespace {
uint64_t mix(uint64_t z) {  // splitmix64's finalizer
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}
}  // namespace

uint64_t document_hash(uint64_t seed, uint64_t index) {
  return mix(mix(seed + 0x9e3779b97f4a7c15ULL) + (index + 1) * 0x9e3779b97f4a7c15ULL);
}

SplitAssigner SplitAssigner::fraction(double fraction, uint64_t seed) {
  QUEST_CHECK(fraction >= 0 && fraction <= 1, "the validation fraction must be in [0, 1], got {}",
              fraction);
  SplitAssigner a;
  a.seed_ = seed;
  a.full_ = fraction >= 1;
  a.threshold_ = a.full_ ? 0 : uint64_t(std::ldexp(fraction, 64));
  return a;
}

SplitAssigner SplitAssigner::count(uint64_t count, uint64_t documents, uint64_t seed) {
  QUEST_CHECK(count <= documents,
              "asked for {} validation documents, but the input holds only {} documents", count,
              documents);
  SplitAssigner a;
  a.seed_ = seed;
  a.by_count_ = true;
  // The `count` smallest (hash, index) pairs, through a max-heap of that size.
  std::priority_queue<std::pair<uint64_t, uint64_t>> heap;
  for (uint64_t i = 0; i < documents && count > 0; ++i) {
    const std::pair<uint64_t, uint64_t> item{document_hash(seed, i), i};
    if (heap.size() < count) {
      heap.push(item);
    } else if (item < heap.top()) {
      heap.pop();
      heap.push(item);
    }
  }
  for (; !heap.empty(); heap.pop()) a.selected_.push_back(heap.top().second);
  std::sort(a.selected_.begin(), a.selected_.end());
  return a;
}

bool SplitAssigner::is_validation(uint64_t index) const {
  if (by_count_) return std::binary_search(selected_.begin(), selected_.end(), index);
  return full_ || document_hash(seed_, index) < threshold_;
}

}  // namespace quest
