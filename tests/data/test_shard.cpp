// Shard format round trips, refusal of malformed shards, and the concatenated TokenDataset.
#include <gtest/gtest.h>

#include <array>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "data/shard.h"
#include "data/temp_dir.h"
#include "data/token_dataset.h"

namespace quest {
namespace {

using test::TempDir;

// The message of the quest::Error that f throws (fails the test when none is thrown).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected quest::Error";
  return {};
}

std::string raw_shard(int32_t magic, int32_t version, int32_t count, size_t payload_bytes) {
  std::array<int32_t, 256> header{};
  header[0] = magic;
  header[1] = version;
  header[2] = count;
  std::string bytes(reinterpret_cast<const char*>(header.data()), 1024);
  bytes.append(payload_bytes, '\x01');
  return bytes;
}

TEST(Shard, RoundTripUint16) {
  TempDir dir;
  Rng rng(1);
  std::vector<uint16_t> tokens(1000);
  for (auto& t : tokens) t = uint16_t(rng.below(65536));
  const auto path = dir / "a.bin";
  write_shard(path, std::span<const uint16_t>(tokens));
  EXPECT_EQ(std::filesystem::file_size(path), 1024 + 2 * tokens.size());
  // The header is llm.c's: magic, version, count.
  std::ifstream in(path, std::ios::binary);
  int32_t h[3];
  in.read(reinterpret_cast<char*>(h), sizeof(h));
  EXPECT_EQ(h[0], 20240520);
  EXPECT_EQ(h[1], 1);
  EXPECT_EQ(h[2], 1000);

  Shard s(path);
  EXPECT_EQ(s.size(), tokens.size());
  EXPECT_EQ(s.width(), 2);
  std::vector<int32_t> out(tokens.size());
  s.copy(0, tokens.size(), out.data());
  for (size_t i = 0; i < tokens.size(); ++i) ASSERT_EQ(out[i], tokens[i]) << i;
  EXPECT_EQ(s[999], tokens[999]);
  // No temporary file left behind.
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path()), {}), 1);
}

TEST(Shard, RoundTripUint32) {
  TempDir dir;
  Rng rng(2);
  std::vector<uint32_t> tokens(777);
  for (auto& t : tokens) t = uint32_t(rng.below(200000));
  tokens[5] = 65536;
  tokens[6] = 131071;
  const auto path = dir / "b.bin";
  write_shard(path, std::span<const uint32_t>(tokens));
  EXPECT_EQ(std::filesystem::file_size(path), 1024 + 4 * tokens.size());
  Shard s(path);
  EXPECT_EQ(s.size(), tokens.size());
  EXPECT_EQ(s.width(), 4);
  std::vector<int32_t> out(100);
  s.copy(3, 100, out.data());
  for (size_t i = 0; i < 100; ++i) ASSERT_EQ(uint32_t(out[i]), tokens[3 + i]);
  EXPECT_EQ(shard_token_width(50257), 2);
  EXPECT_EQ(shard_token_width(65536), 2);
  EXPECT_EQ(shard_token_width(65537), 4);
}

TEST(Shard, EmptyShardIsValid) {
  TempDir dir;
  write_shard(dir / "e.bin", std::span<const uint16_t>());
  EXPECT_EQ(Shard(dir / "e.bin").size(), 0u);
}

TEST(Shard, RefusesWrongMagic) {
  TempDir dir;
  const auto p = dir.write("bad.bin", raw_shard(12345, 1, 4, 8));
  const auto msg = error_of([&] { Shard s(p); });
  EXPECT_NE(msg.find(p), std::string::npos) << msg;
  EXPECT_NE(msg.find("wrong magic number 12345"), std::string::npos) << msg;
  EXPECT_NE(msg.find("20240520"), std::string::npos) << msg;
}

TEST(Shard, RefusesUnsupportedVersion) {
  TempDir dir;
  const auto p16 = dir.write("v16.bin", raw_shard(20240520, 7, 4, 8));
  auto msg = error_of([&] { Shard s(p16); });
  EXPECT_NE(msg.find(p16), std::string::npos) << msg;
  EXPECT_NE(msg.find("unsupported version 7"), std::string::npos) << msg;
  const auto p32 = dir.write("v32.bin", raw_shard(20240801, 1, 4, 16));
  msg = error_of([&] { Shard s(p32); });
  EXPECT_NE(msg.find("unsupported version 1"), std::string::npos) << msg;
  EXPECT_NE(msg.find("expected version 7"), std::string::npos) << msg;
}

TEST(Shard, RefusesWrongSize) {
  TempDir dir;
  const auto trunc = dir.write("t.bin", raw_shard(20240520, 1, 10, 19));
  auto msg = error_of([&] { Shard s(trunc); });
  EXPECT_NE(msg.find(trunc), std::string::npos) << msg;
  EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;
  EXPECT_NE(msg.find("expected 1044 bytes, got 1043"), std::string::npos) << msg;

  const auto trailing = dir.write("x.bin", raw_shard(20240801, 7, 2, 9));
  msg = error_of([&] { Shard s(trailing); });
  EXPECT_NE(msg.find("1 trailing bytes"), std::string::npos) << msg;
  EXPECT_NE(msg.find("expected 1032 bytes, got 1033"), std::string::npos) << msg;

  const auto tiny = dir.write("h.bin", std::string(100, '\0'));
  msg = error_of([&] { Shard s(tiny); });
  EXPECT_NE(msg.find("shorter than the 1024-byte header"), std::string::npos) << msg;

  msg = error_of([&] { Shard s(dir / "missing.bin"); });
  EXPECT_NE(msg.find("cannot open"), std::string::npos) << msg;
}

// Three shards of different sizes (one empty) read as one stream of 0, 1, 2, ...
std::vector<std::string> counting_shards(const TempDir& dir, const std::string& split) {
  const std::vector<size_t> sizes = {100, 0, 37, 250};
  std::vector<std::string> paths;
  uint16_t next = 0;
  for (size_t i = 0; i < sizes.size(); ++i) {
    std::vector<uint16_t> t(sizes[i]);
    for (auto& v : t) v = next++;
    paths.push_back(dir / fmt::format("{}-{:06d}.bin", split, i));
    write_shard(paths.back(), std::span<const uint16_t>(t));
  }
  return paths;
}

TEST(TokenDataset, ConcatenatesShards) {
  TempDir dir;
  const auto paths = counting_shards(dir, "train");
  const auto d = TokenDataset::open_files(paths);
  EXPECT_EQ(d.size(), 387u);
  EXPECT_EQ(d.num_shards(), 4u);
  EXPECT_FALSE(d.meta().has_value());
  // Every (begin, count), including reads crossing one or two boundaries and the empty shard.
  std::vector<int32_t> out(387);
  for (uint64_t begin : {0, 1, 99, 100, 101, 136, 137, 138, 300, 386, 387})
    for (uint64_t count : {0, 1, 2, 37, 38, 200}) {
      if (begin + count > d.size()) continue;
      d.copy(begin, count, out.data());
      for (uint64_t k = 0; k < count; ++k) ASSERT_EQ(out[k], int32_t(begin + k)) << begin;
    }
  const auto msg = error_of([&] { d.copy(380, 8, out.data()); });
  EXPECT_NE(msg.find("past the end"), std::string::npos) << msg;
}

TEST(TokenDataset, OpensSplitGlobAndSpec) {
  TempDir dir;
  counting_shards(dir, "train");
  counting_shards(dir, "val");
  dir.write("train-extra-000000.bin", "not a shard");  // not <split>-<digits>.bin: ignored
  dir.write("notes.txt", "x");
  EXPECT_EQ(TokenDataset::open_split(dir.path(), "train").size(), 387u);
  EXPECT_EQ(TokenDataset::open_split(dir.path(), "val").num_shards(), 4u);
  EXPECT_EQ(TokenDataset::open_glob(dir / "val-00000[0-2].bin").size(), 137u);
  EXPECT_EQ(TokenDataset::open(dir.path(), "val").size(), 387u);
  EXPECT_EQ(TokenDataset::open(dir / "val-000003.bin", "train").size(), 250u);
  EXPECT_EQ(TokenDataset::open(dir / "train-00000?.bin", "").size(), 387u);

  auto msg = error_of([&] { TokenDataset::open_split(dir.path(), "test"); });
  EXPECT_NE(msg.find("no 'test' shards"), std::string::npos) << msg;
  msg = error_of([&] { TokenDataset::open_glob(dir / "nothing-*.bin"); });
  EXPECT_NE(msg.find("no token shards match"), std::string::npos) << msg;
}

TEST(TokenDataset, ReadsMeta) {
  TempDir dir;
  counting_shards(dir, "train");
  dir.write("meta.json", R"({"tokenizer": "gpt2", "vocab_size": 50257, "eot_token": 50256,
    "eot_position": "before", "splits": {"train": {"tokens": 387, "text_bytes": 1500,
    "documents": 3, "files": ["train-000000.bin", "train-000002.bin", "train-000003.bin"]}}})");
  const auto d = TokenDataset::open_split(dir.path(), "train");
  ASSERT_TRUE(d.meta().has_value());
  const auto& m = *d.meta();
  EXPECT_EQ(m.tokenizer, "gpt2");
  EXPECT_EQ(m.vocab_size, 50257);
  EXPECT_EQ(m.eot_token, 50256);
  EXPECT_EQ(m.eot_position, "before");
  EXPECT_EQ(m.tokens, 387u);
  EXPECT_EQ(m.text_bytes, 1500u);
  EXPECT_EQ(m.documents, 3u);
  EXPECT_FALSE(m.skipped_bad.has_value());
  EXPECT_EQ(d.num_shards(), 3u);  // the listed files

  dir.write("meta.json", R"({"splits": {"train": {"tokens": 400}}})");
  auto msg = error_of([&] { TokenDataset::open_split(dir.path(), "train"); });
  EXPECT_NE(msg.find("400 tokens"), std::string::npos) << msg;
  dir.write("meta.json", R"({"splits": {"train": {"tokens": "many"}}})");
  msg = error_of([&] { TokenDataset::open_split(dir.path(), "train"); });
  EXPECT_NE(msg.find("\"tokens\" has the wrong type"), std::string::npos) << msg;
  dir.write("meta.json", "{");
  msg = error_of([&] { TokenDataset::open_split(dir.path(), "train"); });
  EXPECT_NE(msg.find("not valid JSON"), std::string::npos) << msg;
}

}  // namespace
}  // namespace quest
