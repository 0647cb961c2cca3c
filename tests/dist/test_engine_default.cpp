// An engine without a data-parallel step (the CUDA engine, for now) refuses a world of several
// ranks with a clear message instead of training each rank on its own.
#include <gtest/gtest.h>

#include <string>

#include "core/error.h"
#include "dist/single_communicator.h"
#include "train/engine.h"

namespace quest {
namespace {

class TwoRanks final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 2; }
  int local_rank() const override { return 0; }
  std::string backend() const override { return "fake"; }
  void all_reduce_sum(float*, int64_t) override {}
  void all_reduce_sum(double*, int64_t) override {}
  void reduce_scatter_sum(const float*, float*, int64_t) override {}
  void all_gather(const float*, float*, int64_t) override {}
  void broadcast(void*, int64_t, int) override {}
  void barrier() override {}
  [[noreturn]] void abort(int) override { throw Error("abort"); }
};

class NoDataParallel final : public Engine {
 public:
  std::string device() const override { return "cuda:fake"; }
  void init_weights(uint64_t) override {}
  void zero_grads() override {}
  double forward_backward(const int32_t*, const int32_t*, int64_t, int64_t, float) override { return 0; }
  double forward_loss(const int32_t*, const int32_t*, int64_t, int64_t, float* = nullptr) override { return 0; }
  double step(double) override { return 0; }
  int64_t adam_steps() const override { return 0; }
  std::vector<StateArray> state() override { return {}; }
  void restore(const Checkpoint&, bool) override {}
  void load_model(Model&) override {}
  std::vector<float> params() override { return {}; }
  nlohmann::json mask_statistics() override { return nullptr; }
};

TEST(EngineDefault, OneRankIsFineSeveralAreAClearError) {
  NoDataParallel engine;
  SingleCommunicator one;
  EXPECT_NO_THROW(engine.set_communicator(one));
  TwoRanks two;
  try {
    engine.set_communicator(two);
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("data-parallel training is not implemented for this engine yet"), std::string::npos) << msg;
    EXPECT_NE(msg.find("cuda:fake"), std::string::npos) << msg;
  }
}

}  // namespace
}  // namespace quest
