// `quest prepare` reproduces the reference implementation's token stream exactly: the Gutenberg
// validation split, GPT-2 BPE with end-of-text before each book, has the sha256 that
// ../shared/baseline/README.md records for the reference's tokens.
#include <gtest/gtest.h>

#include <filesystem>

#include "core/file_io.h"
#include "data/gpt2_tokenizer.h"
#include "data/prepare.h"
#include "data/sha256.h"
#include "data/temp_dir.h"

namespace quest {
namespace {

TEST(PrepareReference, GutenbergValidationStreamMatchesTheReference) {
  const std::string corpus = QUEST_SOURCE_DIR "/../shared/data/gutenberg/val.jsonl.zst";
  if (!std::filesystem::exists(corpus)) GTEST_SKIP() << "no ../shared beside the checkout";
  test::TempDir dir;
  PrepareOptions opt;
  opt.inputs = {corpus};
  opt.out_dir = dir / "out";
  opt.val_fraction = 0.0;  // every book in one split
  opt.progress = false;
  const PrepareReport r = prepare_corpus(opt, *Gpt2Tokenizer::load(default_gpt2_dir()));
  EXPECT_EQ(r.train.documents, 43u);
  EXPECT_EQ(r.train.tokens, 3'298'165u);
  EXPECT_EQ(r.train.text_bytes, 12'387'206u);
  const std::vector<char> shard = read_file(dir / "out/train-000000.bin");
  ASSERT_GT(shard.size(), 1024u);
  EXPECT_EQ(sha256_hex(std::string_view(shard.data() + 1024, shard.size() - 1024)),
            "6ee228889c67f2847f9ae3174031fe7f9dde1c61bc5eebfb0b66c737b3a6acdf");
}

}  // namespace
}  // namespace quest
