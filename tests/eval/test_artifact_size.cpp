// The artifact size: raw bytes and the zstd-compressed size (the same as one-shot compression).
#include <gtest/gtest.h>
#include <zstd.h>

#include "core/error.h"
#include "core/rng.h"
#include "data/temp_dir.h"
#include "eval/artifact_size.h"

namespace quest {
namespace {

TEST(ArtifactSize, RawAndCompressed) {
  test::TempDir dir;
  Rng rng(2);
  std::string text;
  for (int i = 0; i < 300000; ++i) text += char('a' + rng.below(4));  // about 2 bits a byte
  const std::string path = dir.write("x.bin", text);
  const ArtifactSize s = artifact_size(path, 3);
  EXPECT_EQ(s.raw, text.size());
  std::string out(ZSTD_compressBound(text.size()), '\0');
  const size_t oneshot = ZSTD_compress(out.data(), out.size(), text.data(), text.size(), 3);
  EXPECT_EQ(s.zstd, oneshot);
  EXPECT_LT(s.zstd, text.size() / 3);
  EXPECT_GT(s.zstd, text.size() / 5);
  EXPECT_EQ(artifact_size(dir.write("empty", ""), 3).raw, 0u);
  EXPECT_THROW(artifact_size(path, 0), Error);
  EXPECT_THROW(artifact_size(dir / "missing", 3), Error);
}

}  // namespace
}  // namespace quest
