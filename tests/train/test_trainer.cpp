// End-to-end training on a real text slice (bytes of Moby Dick as tokens, vocabulary 256).
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>

#include "core/error.h"
#include "core/file_io.h"
#include "core/log.h"
#include "data/shard.h"
#include "data/temp_dir.h"
#include "train/byte_corpus.h"
#include "train/resume_check.h"
#include "train/checkpoint.h"
#include "train/trainer.h"

namespace quest {
namespace {

using test::write_byte_shards;

using TrainerTest = test::ByteCorpusTest<200'000>;

TEST_F(TrainerTest, LossFallsWellBelowItsStart) {
  TrainConfig c = test::byte_train_config(dir_);
  Trainer trainer(c);
  const double start = trainer.evaluate().loss;
  EXPECT_NEAR(start, std::log(256.0), 0.3);
  const TrainSummary s = trainer.run();
  EXPECT_EQ(s.steps, 80);
  EXPECT_LT(s.eval.loss, start - 2.0) << "start " << start << " end " << s.eval.loss;
  EXPECT_LT(s.eval.loss, unigram_entropy(trainer.train_data()));
  EXPECT_TRUE(file_exists(c.out_dir + "/checkpoint.bin"));
  EXPECT_TRUE(file_exists(c.out_dir + "/log.jsonl"));
}

TEST_F(TrainerTest, ResumeContinuesBitForBit) {
  TrainConfig c = test::byte_train_config(dir_);
  c.steps = 8;
  c.grad_accum = 2;
  EXPECT_EQ(test::params_differing_after_resume(c, dir_, 4), 0u);
}

TEST_F(TrainerTest, BadInputIsAClearError) {
  TrainConfig c = test::byte_train_config(dir_);
  c.data = dir_ / "nowhere";
  EXPECT_THROW(Trainer{c}, Error);
  c = test::byte_train_config(dir_);
  c.resume = dir_.write("bad.ck", "garbage");
  EXPECT_THROW(Trainer{c}, Error);
  c = test::byte_train_config(dir_);
  c.batch_size = 0;
  EXPECT_THROW(Trainer{c}, Error);
}

}  // namespace
}  // namespace quest
