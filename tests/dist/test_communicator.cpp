// The collectives on the job's ranks (one process under ctest, N under mpirun): each rank
// contributes values that depend on its rank, so a wrong block order or a missing sum shows.
#include <gtest/gtest.h>

#include <cstdint>
#include <numeric>
#include <vector>

#include "dist/single_communicator.h"
#include "dist/test_world.h"

namespace quest {
namespace {

using test::world;

float value(int rank, int64_t i) { return float(rank + 1) * 1000.0f + float(i); }

TEST(Communicator, AllReduceSumsFloatsAndDoubles) {
  Communicator& c = world();
  const int R = c.size();
  std::vector<float> f(37);
  std::vector<double> d(5);
  for (int64_t i = 0; i < 37; ++i) f[size_t(i)] = value(c.rank(), i);
  for (int64_t i = 0; i < 5; ++i) d[size_t(i)] = 0.1 * double(c.rank() + 1) + double(i);
  c.all_reduce_sum(f.data(), 37);
  c.all_reduce_sum(d.data(), 5);
  for (int64_t i = 0; i < 37; ++i) {
    float want = 0;
    for (int r = 0; r < R; ++r) want += value(r, i);
    EXPECT_EQ(f[size_t(i)], want) << i;
  }
  for (int64_t i = 0; i < 5; ++i) EXPECT_NEAR(d[size_t(i)], 0.1 * R * (R + 1) / 2 + R * double(i), 1e-12);
}

TEST(Communicator, ReduceScatterGivesEachRankTheSumOfItsBlock) {
  Communicator& c = world();
  const int R = c.size();
  const int64_t n = 11;
  std::vector<float> in(size_t(n * R)), out(size_t(n), -1.0f);
  for (int64_t i = 0; i < n * R; ++i) in[size_t(i)] = value(c.rank(), i);
  c.reduce_scatter_sum(in.data(), out.data(), n);
  for (int64_t i = 0; i < n; ++i) {
    float want = 0;
    for (int r = 0; r < R; ++r) want += value(r, c.rank() * n + i);
    EXPECT_EQ(out[size_t(i)], want) << i;
  }
}

TEST(Communicator, AllGatherPlacesBlocksInRankOrder) {
  Communicator& c = world();
  const int R = c.size();
  const int64_t n = 9;
  std::vector<float> in(static_cast<size_t>(n)), out(size_t(n * R), -1.0f);
  for (int64_t i = 0; i < n; ++i) in[size_t(i)] = value(c.rank(), i);
  c.all_gather(in.data(), out.data(), n);
  for (int r = 0; r < R; ++r)
    for (int64_t i = 0; i < n; ++i) EXPECT_EQ(out[size_t(r * n + i)], value(r, i)) << r << " " << i;
}

TEST(Communicator, BroadcastSendsRootBytesAndBarrierReturns) {
  Communicator& c = world();
  for (int root = 0; root < c.size(); ++root) {
    std::vector<char> bytes(1000);
    std::iota(bytes.begin(), bytes.end(), char(c.rank() * 7));
    c.broadcast(bytes.data(), int64_t(bytes.size()), root);
    for (size_t i = 0; i < bytes.size(); ++i) ASSERT_EQ(bytes[i], char(root * 7 + int(i))) << i;
  }
  c.barrier();
}

TEST(Communicator, SingleProcessCopies) {
  SingleCommunicator c;
  EXPECT_EQ(c.size(), 1);
  std::vector<float> in = {1, 2, 3}, out(3);
  c.reduce_scatter_sum(in.data(), out.data(), 3);
  EXPECT_EQ(out, in);
  out.assign(3, 0);
  c.all_gather(in.data(), out.data(), 3);
  EXPECT_EQ(out, in);
  EXPECT_THROW(c.broadcast(out.data(), 4, 1), std::exception);
}

}  // namespace
}  // namespace quest
