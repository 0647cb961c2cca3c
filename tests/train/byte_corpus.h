#pragma once
// A real text slice as a tiny corpus for trainer tests: the bytes of Moby Dick (from the set-up
// cache) as tokens of a 256-token vocabulary, 90% train / 10% val shards in a temporary folder.
#include <gtest/gtest.h>

#include <cstdlib>
#include <span>
#include <string>
#include <vector>

#include "core/file_io.h"
#include "core/log.h"
#include "data/shard.h"
#include "data/temp_dir.h"
#include "train/train_config.h"

namespace quest::test {

inline std::string moby_dick_path() {
  const char* cache = std::getenv("QUEST_CACHE");
  const char* home = std::getenv("HOME");
  return (cache && *cache ? std::string(cache) : std::string(home ? home : ".") + "/.cache/quest") +
         "/corpora/moby-dick.txt";
}

// Train/val shards of byte tokens from the first `bytes` of the corpus.
inline void write_byte_shards(const TempDir& dir, size_t bytes) {
  const std::string path = moby_dick_path();
  ASSERT_TRUE(file_exists(path)) << path << " is missing: run scripts/setup.sh first";
  const std::string text = read_text_file(path).substr(0, bytes);
  std::vector<uint16_t> tokens(text.begin(), text.end());
  for (auto& t : tokens) t &= 0xFF;
  const size_t split = tokens.size() * 9 / 10;
  write_shard(dir / "train-000000.bin", std::span(tokens).first(split));
  write_shard(dir / "val-000000.bin", std::span(tokens).subspan(split));
}

// A small model on the byte corpus in `dir`: 2 layers, d 32, head_dim 16, vocabulary 256, 32-token
// windows, 8 per micro-batch, 80 steps at lr 3e-3, validation on 16 windows at the end, output in
// dir/run. Tests change what they need.
inline TrainConfig byte_train_config(const TempDir& dir) {
  TrainConfig c;
  c.model.preset = "custom";
  c.model.n_layer = 2;
  c.model.d_model = 32;
  c.model.head_dim = 16;
  c.model.vocab_size = 256;
  c.model.seq_len = 32;
  c.batch_size = 8;
  c.steps = 80;
  c.schedule.peak_lr = 3e-3;
  c.eval_every = 0;
  c.eval_windows = 16;
  c.log_every = 1000;
  c.data = dir.path();
  c.out_dir = dir / "run";
  return c;
}

// A test fixture over a fresh byte corpus of the first Bytes of Moby Dick, with the log silenced.
template <size_t Bytes>
class ByteCorpusTest : public ::testing::Test {
 protected:
  void SetUp() override {
    set_log_sink([](LogLevel, std::string_view) {});
    write_byte_shards(dir_, Bytes);
  }
  void TearDown() override { set_log_sink(nullptr); }
  TempDir dir_;
};

}  // namespace quest::test
