// Bits per byte of a split whose byte count is known, against an independent computation of the
// mean loss; and the model/data tokenizer checks.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include "core/error.h"
#include "core/rng.h"
#include "data/shard.h"
#include "data/temp_dir.h"
#include "eval/byte_tokenizer.h"
#include "eval/data_check.h"
#include "train/evaluate.h"

namespace quest {
namespace {

ModelConfig small_model() {
  ModelConfig c;
  c.n_layer = 1;
  c.d_model = 32;
  c.head_dim = 16;
  c.hidden = 64;
  c.vocab_size = 256;
  c.seq_len = 16;
  return c;
}

// A val split of `tokens` byte tokens whose text was `text_bytes` bytes (as meta.json records it).
void write_split(const test::TempDir& dir, size_t tokens, uint64_t text_bytes, const std::string& tokenizer) {
  Rng rng(3);
  std::vector<uint16_t> t(tokens);
  for (auto& v : t) v = uint16_t(rng.below(256));
  write_shard(dir / "val-000000.bin", t);
  std::ofstream(dir / "meta.json") << R"({"format": "quest-token-shards", "tokenizer": ")" << tokenizer
                                   << R"(", "vocab_size": 256, "splits": {"val": {"tokens": )" << tokens
                                   << R"(, "text_bytes": )" << text_bytes << "}}}";
}

TEST(BitsPerByte, FromTheSplitsByteCount) {
  test::TempDir dir;
  const size_t tokens = 16 * 10 + 5;  // 10 windows of 16 (+1 target), and a tail left out
  write_split(dir, tokens, 3 * tokens, "test-bytes");
  const TokenDataset data = TokenDataset::open(dir.path(), "val");
  Model model(small_model(), 4);
  model.init_weights(5);
  const EvalResult r = evaluate_split(model, data, 4);
  EXPECT_EQ(r.windows, 10);
  EXPECT_EQ(r.tokens, 160);
  // The mean loss, window by window.
  std::vector<int32_t> all(tokens);
  data.copy(0, tokens, all.data());
  double sum = 0;
  for (int64_t w = 0; w < 10; ++w)
    sum += model.forward_loss(all.data() + w * 16, all.data() + w * 16 + 1, 1, 16);
  const double loss = sum / 160;
  EXPECT_NEAR(r.loss, loss, 1e-6 * loss);
  ASSERT_TRUE(r.bits_per_byte.has_value());
  // Each token stands for 3 bytes of text: bits per byte = loss / ln 2 / 3.
  EXPECT_NEAR(*r.bits_per_byte, loss / std::log(2.0) / 3.0, 1e-6);
  EXPECT_NEAR(r.perplexity, std::exp(loss), 1e-6 * std::exp(loss));
}

TEST(BitsPerByte, NoByteCountNoBitsPerByte) {
  test::TempDir dir;
  Rng rng(1);
  std::vector<uint16_t> t(100);
  for (auto& v : t) v = uint16_t(rng.below(256));
  write_shard(dir / "val-000000.bin", t);  // no meta.json
  const TokenDataset data = TokenDataset::open(dir.path(), "val");
  Model model(small_model(), 2);
  model.init_weights(5);
  EXPECT_FALSE(evaluate_split(model, data, 2).bits_per_byte.has_value());
}

TEST(DataCheck, TokenizerMismatchIsAnError) {
  test::TempDir dir;
  write_split(dir, 100, 100, "gpt2");
  const TokenDataset data = TokenDataset::open(dir.path(), "val");
  EXPECT_THROW(check_data_matches_model("test-bytes", small_model(), data), Error);
  EXPECT_NO_THROW(check_data_matches_model("gpt2", small_model(), data));
  ModelConfig narrow = small_model();
  narrow.vocab_size = 100;
  EXPECT_THROW(check_data_matches_model("gpt2", narrow, data), Error);
  test::ByteTokenizer tok;
  EXPECT_NO_THROW(check_tokenizer_matches_model("test-bytes", small_model(), tok));
  EXPECT_THROW(check_tokenizer_matches_model("gpt2", small_model(), tok), Error);
  EXPECT_THROW(check_tokenizer_matches_model("test-bytes", narrow, tok), Error);
}

}  // namespace
}  // namespace quest
