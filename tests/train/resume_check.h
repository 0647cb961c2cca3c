#pragma once
// The resume check shared by the CPU and GPU trainer tests: c.steps steps straight, against
// `split` steps + checkpoint + --resume + the rest. Returns how many parameters differ at the end
// (0: the resumed run continued bit for bit).
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "data/temp_dir.h"
#include "train/trainer.h"

namespace quest::test {

inline size_t params_differing_after_resume(TrainConfig c, const TempDir& dir, int64_t split) {
  c.out_dir = dir / "straight";
  Trainer straight(c);
  straight.run();
  const std::vector<float> expected = straight.params();

  c.out_dir = dir / "first";
  Trainer first(c);
  first.run(split);
  const std::string ck = dir / "half.bin";
  first.save_checkpoint(ck);

  c.out_dir = dir / "second";
  c.resume = ck;
  Trainer second(c);
  EXPECT_EQ(second.step(), split);
  second.run();
  const std::vector<float> got = second.params();
  EXPECT_EQ(got.size(), expected.size());
  if (got.size() != expected.size()) return got.size() + expected.size();
  size_t differing = 0;
  for (size_t i = 0; i < got.size(); ++i) differing += got[i] != expected[i];
  return differing;
}

}  // namespace quest::test
