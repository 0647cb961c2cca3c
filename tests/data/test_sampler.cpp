// The training window sampler (seeded epochs of permuted windows) and the fixed validation windows.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <vector>

#include "core/error.h"
#include "data/sampler.h"
#include "data/temp_dir.h"

namespace quest {
namespace {

using test::TempDir;

// A dataset whose token at position p is p % 60000 (two shards, so windows cross a boundary).
struct CountingData {
  TempDir dir;
  std::vector<std::string> paths;
  explicit CountingData(uint64_t n) {
    std::vector<uint16_t> a(n / 3), b(n - n / 3);
    for (uint64_t p = 0; p < n; ++p) (p < a.size() ? a[p] : b[p - a.size()]) = uint16_t(p % 60000);
    paths = {dir / "train-000000.bin", dir / "train-000001.bin"};
    write_shard(paths[0], std::span<const uint16_t>(a));
    write_shard(paths[1], std::span<const uint16_t>(b));
  }
  TokenDataset open() const { return TokenDataset::open_files(paths); }
};

constexpr int64_t T = 16;

TEST(WindowSampler, WindowsAreShiftedPairs) {
  CountingData cd(1000);
  const auto data = cd.open();
  WindowSampler s(data, T, 7);
  std::vector<int32_t> x(T), y(T);
  for (int i = 0; i < 100; ++i) {
    s.next(x.data(), y.data());
    for (int64_t t = 0; t < T; ++t) {
      ASSERT_EQ(y[t], x[t] + 1);
      if (t > 0) ASSERT_EQ(x[t], x[t - 1] + 1);
    }
    // Windows start at offset + k*T.
    ASSERT_EQ((uint64_t(x[0]) - s.offset()) % T, 0u);
  }
}

// The window starts that the sampler produces over `epochs` epochs, read from the tokens.
std::vector<std::vector<uint64_t>> starts_by_epoch(const TokenDataset& data, uint64_t seed,
                                                   int epochs) {
  WindowSampler s(data, T, seed);
  std::vector<std::vector<uint64_t>> out(epochs);
  std::vector<int32_t> x(T), y(T);
  while (true) {
    const auto st = s.state();
    const uint64_t n = st.index < s.windows_in_epoch() ? 0 : 1;
    if (st.epoch + n >= uint64_t(epochs)) break;
    s.next(x.data(), y.data());
    out[s.epoch()].push_back(uint64_t(x[0]));
  }
  return out;
}

TEST(WindowSampler, EachEpochIsAPermutationOfAllWindows) {
  const uint64_t N = 2000;
  CountingData cd(N);
  const auto data = cd.open();
  const auto epochs = starts_by_epoch(data, 3, 6);
  std::set<uint64_t> offsets;
  for (const auto& starts : epochs) {
    ASSERT_FALSE(starts.empty());
    const uint64_t offset = *std::min_element(starts.begin(), starts.end()) % T;
    offsets.insert(offset);
    // Exactly every window offset + k*T that fits (s + T + 1 <= N), each once.
    const uint64_t count = (N - offset - 1) / T;
    std::vector<uint64_t> sorted = starts;
    std::sort(sorted.begin(), sorted.end());
    ASSERT_EQ(sorted.size(), count);
    for (uint64_t k = 0; k < count; ++k) ASSERT_EQ(sorted[k], offset + k * T);
    // ... in a shuffled order.
    EXPECT_NE(sorted, starts);
  }
  EXPECT_GE(offsets.size(), 3u) << "offsets should vary between epochs";
  EXPECT_NE(epochs[0], epochs[1]);
}

TEST(WindowSampler, DeterministicAndSeedDependent) {
  CountingData cd(3000);
  const auto data = cd.open();
  EXPECT_EQ(starts_by_epoch(data, 11, 3), starts_by_epoch(data, 11, 3));
  EXPECT_NE(starts_by_epoch(data, 11, 3), starts_by_epoch(data, 12, 3));
  // Epoch e is drawn from seed + e: epoch 1 of seed 11 is epoch 0 of seed 12.
  EXPECT_EQ(starts_by_epoch(data, 11, 2)[1], starts_by_epoch(data, 12, 1)[0]);
}

TEST(WindowSampler, StateRestoreContinuesIdentically) {
  CountingData cd(1500);
  const auto data = cd.open();
  const int64_t B = 5;
  std::vector<int32_t> x(B * T), y(B * T), x2(B * T), y2(B * T);
  WindowSampler a(data, T, 99);
  for (int i = 0; i < 37; ++i) a.next_batch(B, x.data(), y.data());  // into epoch 2
  const auto saved = a.state();
  EXPECT_GE(saved.epoch, 1u);

  WindowSampler b(data, T, 99);  // a fresh run resumed from the saved state
  b.restore(saved);
  EXPECT_EQ(b.state(), saved);
  for (int i = 0; i < 50; ++i) {
    a.next_batch(B, x.data(), y.data());
    b.next_batch(B, x2.data(), y2.data());
    ASSERT_EQ(x, x2);
    ASSERT_EQ(y, y2);
  }
  // Restoring to an earlier epoch replays it.
  WindowSampler c(data, T, 99);
  c.next_batch(B, x.data(), y.data());
  c.restore({0, 0});
  c.next_batch(B, x2.data(), y2.data());
  EXPECT_EQ(x, x2);
  const auto msg = [&] {
    try {
      c.restore({0, 100000});
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  }();
  EXPECT_NE(msg.find("cannot restore"), std::string::npos) << msg;
}

TEST(WindowSampler, SkipMatchesNextAndSplitsAcrossRanks) {
  CountingData cd(1200);
  const auto data = cd.open();
  const int64_t B = 3, R = 4;
  std::vector<int32_t> global_x(B * R * T), global_y(B * R * T);
  WindowSampler single(data, T, 5);
  std::vector<WindowSampler> ranks;
  for (int r = 0; r < R; ++r) ranks.emplace_back(data, T, 5);
  std::vector<int32_t> x(B * T), y(B * T);
  for (int step = 0; step < 30; ++step) {  // crosses several epochs
    single.next_batch(B * R, global_x.data(), global_y.data());
    for (int r = 0; r < R; ++r) {
      ranks[r].skip(uint64_t(r * B));
      ranks[r].next_batch(B, x.data(), y.data());
      ranks[r].skip(uint64_t((R - 1 - r) * B));
      ASSERT_TRUE(std::equal(x.begin(), x.end(), global_x.begin() + r * B * T));
      ASSERT_TRUE(std::equal(y.begin(), y.end(), global_y.begin() + r * B * T));
      ASSERT_EQ(ranks[r].state(), single.state());
    }
  }
}

TEST(WindowSampler, TinyDatasets) {
  {
    CountingData cd(T + 1);  // exactly one window: always offset 0
    const auto data = cd.open();
    WindowSampler s(data, T, 1);
    std::vector<int32_t> x(T), y(T);
    for (int i = 0; i < 5; ++i) {
      s.next(x.data(), y.data());
      EXPECT_EQ(x[0], 0);
      EXPECT_EQ(y[T - 1], T);
    }
  }
  CountingData cd(T);
  const auto data = cd.open();
  try {
    WindowSampler s(data, T, 1);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("has 16 tokens, fewer than the 17"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(ValidationWindows(data, T), Error);
}

TEST(ValidationWindows, FixedInOrderFromOffsetZero) {
  CountingData cd(1000);
  const auto data = cd.open();
  ValidationWindows v(data, T);
  EXPECT_EQ(v.count(), (1000u - 1) / T);
  std::vector<int32_t> x(T), y(T);
  for (uint64_t i = 0; i < v.count(); ++i) {
    v.get(i, x.data(), y.data());
    ASSERT_EQ(x[0], int32_t(i * T));
    ASSERT_EQ(y[T - 1], int32_t(i * T + T));
  }
  ValidationWindows limited(data, T, 10);
  EXPECT_EQ(limited.count(), 10u);
  std::vector<int32_t> bx(3 * T), by(3 * T);
  limited.get_batch(7, 3, bx.data(), by.data());
  EXPECT_EQ(bx[0], 7 * T);
  EXPECT_EQ(by[3 * T - 1], 10 * T);
  EXPECT_THROW(limited.get_batch(8, 3, bx.data(), by.data()), Error);
}

}  // namespace
}  // namespace quest
