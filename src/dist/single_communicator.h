#pragma once
// A job of one process: collectives are copies, so the trainer has one code path for any world
// size.
#include "dist/communicator.h"

namespace quest {

class SingleCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  int local_rank() const override { return 0; }
  std::string backend() const override { return "single"; }
  void all_reduce_sum(float*, int64_t) override {}
  void all_reduce_sum(double*, int64_t) override {}
  void reduce_scatter_sum(const float* in, float* out, int64_t count) override;
  void all_gather(const float* in, float* out, int64_t count) override;
  void broadcast(void*, int64_t, int root) override;
  void barrier() override {}
  [[noreturn]] void abort(int code) override;
};

}  // namespace quest
