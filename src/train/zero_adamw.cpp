#include "train/zero_adamw.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace quest {

ZeroAdamW::ZeroAdamW(const AdamWConfig& cfg, std::vector<ParamGroup> groups, Communicator& comm)
    : comm_(comm), groups_(std::move(groups)) {
  int64_t total = 0;
  for (const auto& g : groups_) total += g.size;
  shard_ = shard_range(total, comm.rank(), comm.size());
  flat_.assign(size_t(shard_.padded()), 0.0f);
  shard_grad_.assign(size_t(shard_.per_rank), 0.0f);
  shard_param_.assign(size_t(shard_.per_rank), 0.0f);
  // The part of each group inside [begin, end), pointing into the shard's buffers; AdamW keeps its
  // moments in this order, which is the global order restricted to the shard.
  std::vector<ParamGroup> local;
  int64_t offset = 0;
  for (const auto& g : groups_) {
    const int64_t lo = std::max(offset, shard_.begin), hi = std::min(offset + g.size, shard_.end);
    if (lo < hi) {
      local.push_back({shard_param_.data() + (lo - shard_.begin),
                       shard_grad_.data() + (lo - shard_.begin), hi - lo, g.decay});
    }
    offset += g.size;
  }
  local_ = std::make_unique<AdamW>(cfg, std::move(local));
}

ZeroAdamW::~ZeroAdamW() = default;

int64_t ZeroAdamW::step_count() const { return local_->step_count(); }
void ZeroAdamW::set_step_count(int64_t t) { local_->set_step_count(t); }

double ZeroAdamW::step(double lr) {
  // Pack every rank's gradients (padding stays zero), sum them shard by shard.
  int64_t offset = 0;
  for (const auto& g : groups_) {
    std::copy(g.grads, g.grads + g.size, flat_.data() + offset);
    offset += g.size;
  }
  std::fill(flat_.begin() + offset, flat_.end(), 0.0f);
  comm_.reduce_scatter_sum(flat_.data(), shard_grad_.data(), shard_.per_rank);

  // The norm of the whole summed gradient: squares summed per shard, then over ranks.
  const double local_norm = local_->grad_norm();
  double squares = local_norm * local_norm;
  comm_.all_reduce_sum(&squares, 1);
  const double norm = std::sqrt(squares);

  // Every rank holds the same weights: take this shard's, update them, gather all shards.
  offset = 0;
  for (const auto& g : groups_) {
    const int64_t lo = std::max(offset, shard_.begin), hi = std::min(offset + g.size, shard_.end);
    if (lo < hi) std::copy(g.params + (lo - offset), g.params + (hi - offset),
                           shard_param_.data() + (lo - shard_.begin));
    offset += g.size;
  }
  local_->apply(lr, norm);
  comm_.all_gather(shard_param_.data(), flat_.data(), shard_.per_rank);
  offset = 0;
  for (const auto& g : groups_) {
    std::copy(flat_.data() + offset, flat_.data() + offset + g.size, g.params);
    offset += g.size;
  }
  return norm;
}

std::vector<float> ZeroAdamW::gather(const std::vector<float>& local) {
  std::vector<float> block(size_t(shard_.per_rank), 0.0f);
  std::copy(local.begin(), local.end(), block.begin());
  std::vector<float> all(size_t(shard_.padded()));
  comm_.all_gather(block.data(), all.data(), shard_.per_rank);
  all.resize(size_t(shard_.total));
  return all;
}

std::vector<float> ZeroAdamW::gather_m() { return gather(local_->m()); }
std::vector<float> ZeroAdamW::gather_v() { return gather(local_->v()); }

void ZeroAdamW::set_moments(std::span<const float> m, std::span<const float> v) {
  QUEST_CHECK(int64_t(m.size()) <= shard_.total && m.size() == v.size(),
              "optimizer moments of {} and {} values for a state of {}", m.size(), v.size(),
              shard_.total);
  const int64_t count = int64_t(m.size());
  for (int64_t i = 0; i < shard_.size(); ++i) {
    const int64_t g = shard_.begin + i;
    local_->m()[size_t(i)] = g < count ? m[size_t(g)] : 0.0f;
    local_->v()[size_t(i)] = g < count ? v[size_t(g)] : 0.0f;
  }
}

}  // namespace quest
