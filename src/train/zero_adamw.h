#pragma once
// AdamW for data-parallel training with the optimizer state sharded across ranks (ZeRO stage 1).
// Every rank holds the whole model and computes gradients on its slice of the batch; step()
// then reduce-scatters the gradients (each rank receives the sum over ranks of its shard), takes
// the norm of the whole summed gradient for clipping, updates its shard with AdamW, and
// all-gathers the updated weights. The moments exist once across the job: each rank keeps
// 1/world of them.
//
// With the same gradients summed, the result equals AdamW::step on one process up to the order
// of floating-point sums (the norm is summed per shard, then over ranks).
#include <memory>
#include <span>
#include <vector>

#include "dist/communicator.h"
#include "dist/shard_range.h"
#include "train/adamw.h"

namespace quest {

class ZeroAdamW {
 public:
  // `groups` cover every trainable array, in the order of the optimizer state (as for AdamW).
  ZeroAdamW(const AdamWConfig& cfg, std::vector<ParamGroup> groups, Communicator& comm);
  ~ZeroAdamW();

  // Collective. Returns the pre-clipping norm of the gradient summed over ranks.
  double step(double lr);

  int64_t step_count() const;
  void set_step_count(int64_t t);
  int64_t state_size() const { return shard_.total; }
  const ShardRange& shard() const { return shard_; }

  // Collective: the whole first / second moments, on every rank (for checkpoints).
  std::vector<float> gather_m();
  std::vector<float> gather_v();
  // This rank keeps its shard of whole moments (each at most state_size() values; the rest of
  // the state is zero): for resuming, on any number of ranks.
  void set_moments(std::span<const float> m, std::span<const float> v);

 private:
  std::vector<float> gather(const std::vector<float>& local);

  Communicator& comm_;
  std::vector<ParamGroup> groups_;
  ShardRange shard_;
  std::vector<float> flat_;                     // padded: packed gradients, then gathered weights
  std::vector<float> shard_grad_, shard_param_;  // this rank's block (per_rank values)
  std::unique_ptr<AdamW> local_;                // AdamW over this rank's shard
};

}  // namespace quest
