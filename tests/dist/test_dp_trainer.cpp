// The data-parallel trainer on the job's ranks against one process, which every rank also runs
// on its own as the reference: R ranks with a global micro-batch of 2R rows equal one process
// with micro-batches of 2 rows and R times the gradient accumulation (same windows per step, the
// same summed gradient up to fp32 rounding). Checkpoints move between world sizes both ways.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "core/file_io.h"
#include "dist/test_world.h"
#include "train/byte_corpus.h"
#include "train/checkpoint.h"
#include "train/trainer.h"

namespace quest {
namespace {

using test::world;

TrainConfig tiny_config(const test::TempDir& dir, const std::string& quant = "") {
  TrainConfig c = test::byte_train_config(dir);
  c.model.n_layer = 1;
  c.model.seq_len = 16;
  c.steps = 6;
  c.eval_windows = 8;
  if (!quant.empty()) c.quant = QuantConfig::parse(quant);
  return c;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double d = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) d = std::max(d, double(std::abs(a[i] - b[i])));
  return d;
}

class DataParallelTrainer : public test::ByteCorpusTest<60'000>,
                            public ::testing::WithParamInterface<std::string> {};

TEST_P(DataParallelTrainer, EqualsOneProcessWithMoreAccumulation) {
  Communicator& c = world();
  const int R = c.size();
  TrainConfig dp = tiny_config(dir_, GetParam());
  dp.batch_size = 2 * R;
  dp.grad_accum = 2;
  dp.out_dir = dir_ / "dp";
  // Quantized training amplifies fp32 rounding differences (a value crossing a rounding boundary
  // of the grid): after two steps they are still at rounding level (~1e-7), by six about 1e-3.
  if (!GetParam().empty()) dp.steps = 2;
  Trainer job(dp, &c);
  const TrainSummary got = job.run();

  TrainConfig one = dp;
  one.batch_size = 2;
  one.grad_accum = 2 * R;
  one.out_dir = dir_ / "one";
  Trainer alone(one);
  const TrainSummary want = alone.run();

  EXPECT_NEAR(got.train_loss, want.train_loss, 2e-5 * want.train_loss);
  EXPECT_NEAR(got.eval.loss, want.eval.loss, 2e-5 * want.eval.loss);
  EXPECT_LT(max_abs_diff(job.params(), alone.params()), 2e-5);
  EXPECT_EQ(file_exists(dp.out_dir + "/checkpoint.bin"), c.rank() == 0);  // written once
}

INSTANTIATE_TEST_SUITE_P(Quant, DataParallelTrainer, ::testing::Values("", "w=lsq:4,a=lsq:4"),
                         [](const auto& info) { return info.param.empty() ? "fp32" : "lsq4"; });

using DataParallelCheckpoint = test::ByteCorpusTest<60'000>;

TEST_F(DataParallelCheckpoint, ResumesOnAnotherNumberOfRanks) {
  Communicator& c = world();
  const int R = c.size();
  TrainConfig cfg = tiny_config(dir_);
  cfg.batch_size = 2 * R;
  cfg.steps = 8;

  // Straight, on one process: the reference for both directions.
  cfg.out_dir = dir_ / "straight";
  Trainer straight(cfg);
  straight.run();
  const std::vector<float> want = straight.params();

  // R ranks to step 4, checkpoint (complete: the whole optimizer state), then one process.
  cfg.out_dir = dir_ / "job";
  Trainer job(cfg, &c);
  job.run(4);
  const std::string ck = dir_ / "job.bin";
  job.save_checkpoint(ck);  // every rank calls it; rank 0 writes
  if (c.rank() == 0) {
    const Checkpoint saved = load_checkpoint(ck);
    EXPECT_EQ(saved.arrays.at("adam.m").size(), saved.arrays.at("params").size());
    EXPECT_EQ(saved.header.at("world_size").get<int>(), R);
    TrainConfig r = cfg;
    r.resume = ck;
    r.out_dir = dir_ / "resumed1";
    Trainer one(r);
    EXPECT_EQ(one.step(), 4);
    one.run();
    EXPECT_LT(max_abs_diff(one.params(), want), 2e-5);
  }
  c.barrier();

  // One process to step 4 (each rank writes its own), then R ranks.
  cfg.out_dir = dir_ / "one";
  Trainer first(cfg);
  first.run(4);
  const std::string ck1 = dir_ / "one.bin";
  first.save_checkpoint(ck1);
  TrainConfig r = cfg;
  r.resume = ck1;  // only rank 0 reads it; the others receive its bytes
  r.out_dir = dir_ / "resumedR";
  Trainer again(r, &c);
  EXPECT_EQ(again.step(), 4);
  again.run();
  EXPECT_LT(max_abs_diff(again.params(), want), 2e-5);
}

}  // namespace
}  // namespace quest
