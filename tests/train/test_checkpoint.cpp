#include <gtest/gtest.h>

#include <fstream>

#include "core/error.h"
#include "core/file_io.h"
#include "data/temp_dir.h"
#include "train/checkpoint.h"

namespace quest {
namespace {

std::string write_sample(const test::TempDir& dir) {
  std::vector<float> a = {1.f, 2.f, 3.f}, b = {-4.5f};
  const std::string path = dir / "ck.bin";
  save_checkpoint(path, {{"step", 7}}, {{"a", a.data(), 3}, {"b", b.data(), 1}});
  return path;
}

TEST(Checkpoint, RoundTrip) {
  test::TempDir dir;
  const std::string path = write_sample(dir);
  const Checkpoint ck = load_checkpoint(path);
  EXPECT_EQ(ck.header.at("step"), 7);
  EXPECT_EQ(ck.array("a", 3), (std::vector<float>{1.f, 2.f, 3.f}));
  EXPECT_EQ(ck.array("b", 1)[0], -4.5f);
  EXPECT_THROW(ck.array("a", 4), Error);
  EXPECT_THROW(ck.array("c", 1), Error);
  EXPECT_FALSE(file_exists(path + ".tmp"));
}

void expect_error(const std::string& path, const std::string& words) {
  try {
    load_checkpoint(path);
    FAIL() << "no error for " << words;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
  }
}

TEST(Checkpoint, RefusesBadFiles) {
  test::TempDir dir;
  const std::string path = write_sample(dir);
  auto bytes = read_file(path);
  expect_error(dir / "missing.bin", "does not exist");
  expect_error(dir.write("junk.bin", "hello world, not a checkpoint"), "not a quest checkpoint");
  expect_error(dir.write("trunc.bin", std::string(bytes.data(), bytes.size() - 9)), "corrupt");
  auto flipped = bytes;
  flipped[bytes.size() - 10] ^= 0x40;
  expect_error(dir.write("flip.bin", std::string(flipped.data(), flipped.size())), "checksum");
  auto version = bytes;
  version[8] = 9;
  expect_error(dir.write("ver.bin", std::string(version.data(), version.size())), "version");
}

}  // namespace
}  // namespace quest
