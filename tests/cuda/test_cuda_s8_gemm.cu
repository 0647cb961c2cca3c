// Our sm_90a int8 GEMM with the scales in its epilogue (src/quant/cuda/s8_gemm_sm90.h) against
// - the cuBLASLt route of LowbitGemm::forward (kInt8 with Int8Kernel::kCublasLt forced: IMMA int32
//   sums + lowbit_scale_int32): bitwise equal bf16 outputs, for both tiles and through
//   LowbitGemm's automatic choice;
// - a CPU reference: exact int64 sums, then the epilogue's three fp32 roundings
//   (float(acc) * (0.25f * sx[n])) * sw[m] (separate IEEE products on the host: no contraction
//   is possible) and bf16 round-to-nearest-even: bitwise equal too.
// Shapes: partial tiles in both directions (N = 300, M = 200), the presets' K (640, 1280) and the
// 7B down projection's K = 11008, a K that is not a multiple of the 128-byte stage (K = 208: the
// TMA zero fill), codes over the full int8 range and small odd codes, and the worst cases (all
// +127 and all +15 over K = 11008; |sum| = 177,549,... fits int32). The output is allocated with a
// poisoned tail that must stay untouched (stores are predicated on n < N, m < M).
// Skipped where s8_gemm_sm90_available() is false (no sm_90 device, or no sm_90a code).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "cuda/cuda_test_util.h"
#include "quant/cuda/lowbit_gemm.h"
#include "quant/cuda/s8_gemm_sm90.h"

namespace quest {
namespace {

using cuda::bf16;
using cuda::Int8Kernel;
using cuda::LowbitGemm;
using cuda::LowbitRoute;
using cuda::S8Sm90Tile;
using cuda_test::bf16_bits;
using cuda_test::DeviceBuffer;
using cuda_test::download;
using cuda_test::upload;

#define QUEST_REQUIRE_S8_SM90()                                                       \
  do {                                                                                \
    QUEST_REQUIRE_CUDA();                                                             \
    if (!cuda::s8_gemm_sm90_available())                                              \
      GTEST_SKIP() << "s8_gemm_sm90 needs an sm_90 device and sm_90a code";           \
  } while (0)

constexpr int64_t kTail = 4096;
constexpr S8Sm90Tile kTiles[] = {S8Sm90Tile::k128x256,   S8Sm90Tile::k128x128,
                                 S8Sm90Tile::k128x256p,  S8Sm90Tile::k128x128pp,
                                 S8Sm90Tile::k64x256pp};  // poisoned bf16 entries after y[N, M]

struct Problem {
  int64_t N, K, M;
  std::vector<int8_t> xc, wc;
  std::vector<float> sx, sw;
};

// Codes: `bits` 1..7 = random odd codes of that width; 8 = uniform over -127..127 without 0.
std::vector<int8_t> codes(Rng& rng, size_t n, int bits) {
  if (bits < 8) return cuda_test::rand_odd_codes(rng, n, bits);
  std::vector<int8_t> c(n);
  for (auto& v : c) {
    const int u = int(rng.below(254));  // 0..253 -> -127..-1, 1..127
    v = int8_t(u < 127 ? u - 127 : u - 126);
  }
  return c;
}

using cuda_test::rand_steps;

Problem random_problem(int64_t N, int64_t K, int64_t M, int bits, uint64_t seed) {
  Rng rng(seed);
  Problem p{N, K, M, codes(rng, size_t(N * K), bits), codes(rng, size_t(M * K), bits), {}, {}};
  p.sx = rand_steps(rng, size_t(N));
  p.sw = rand_steps(rng, size_t(M));
  return p;
}

// The epilogue on the host: bits of bf16((float(acc) * (0.25f * sx)) * sw).
uint16_t reference_bits(int64_t acc, float sx, float sw) {
  const volatile float s = 0.25f * sx;  // volatile: each product rounded on its own
  const volatile float v = float(int32_t(acc)) * s;
  const volatile float r = v * sw;
  return bf16_bits(r);
}

// Output buffer of N x M + kTail entries, all 0xFFFF before the call.
struct Output {
  DeviceBuffer<bf16> buf;
  explicit Output(const Problem& p) : buf(size_t(p.N * p.M + kTail)) { buf.fill_nan(); }
  std::vector<uint16_t> bits() const {
    return download(reinterpret_cast<const uint16_t*>(buf.get()), buf.size());
  }
};

struct DeviceProblem {
  DeviceBuffer<int8_t> xc, wc;
  DeviceBuffer<float> sx, sw;
  explicit DeviceProblem(const Problem& p)
      : xc(upload(p.xc)), wc(upload(p.wc)), sx(upload(p.sx)), sw(upload(p.sw)) {}
};

std::string hex(uint16_t v) {
  char b[8];
  std::snprintf(b, sizeof(b), "0x%04x", unsigned(v));
  return b;
}

std::string describe(const Problem& p) {
  return "N=" + std::to_string(p.N) + " K=" + std::to_string(p.K) + " M=" + std::to_string(p.M);
}

// Bitwise equality of two outputs (tail included); reports the first few differences.
::testing::AssertionResult same_bits(const std::vector<uint16_t>& got,
                                     const std::vector<uint16_t>& want, int64_t M,
                                     const std::string& what) {
  int64_t bad = 0;
  std::string first;
  for (size_t i = 0; i < got.size(); ++i)
    if (got[i] != want[i]) {
      if (bad++ < 5)
        first += " [" + std::to_string(int64_t(i) / M) + "," + std::to_string(int64_t(i) % M) +
                 "] got " + hex(got[i]) + " want " + hex(want[i]);
    }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << what << ": " << bad << " of " << got.size()
                                       << " entries differ;" << first;
}

// The CPU reference on rows `rows` (all when empty): int64 sums and the epilogue; plus the tail
// (still 0xFFFF).
::testing::AssertionResult matches_cpu(const Problem& p, const std::vector<uint16_t>& got,
                                       std::vector<int64_t> rows, const std::string& what) {
  if (rows.empty())
    for (int64_t n = 0; n < p.N; ++n) rows.push_back(n);
  int64_t bad = 0;
  std::string first;
  for (const int64_t n : rows)
    for (int64_t m = 0; m < p.M; ++m) {
      int64_t acc = 0;
      const int8_t* xr = p.xc.data() + n * p.K;
      const int8_t* wr = p.wc.data() + m * p.K;
      for (int64_t k = 0; k < p.K; ++k) acc += int64_t(xr[k]) * int64_t(wr[k]);
      const uint16_t want = reference_bits(acc, p.sx[size_t(n)], p.sw[size_t(m)]);
      const uint16_t have = got[size_t(n * p.M + m)];
      if (have != want && bad++ < 5)
        first += " [" + std::to_string(n) + "," + std::to_string(m) + "] sum " +
                 std::to_string(acc) + " got " + hex(have) + " want " + hex(want);
    }
  for (size_t i = size_t(p.N * p.M); i < got.size(); ++i)
    if (got[i] != 0xFFFF && bad++ < 5) first += " tail entry written";
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << what << ": " << bad << " entries differ from the CPU;"
                                       << first;
}

std::vector<int64_t> sample_rows(int64_t N) {
  std::vector<int64_t> rows;
  for (int64_t n = 0; n < N; n += 37) rows.push_back(n);
  for (int64_t n = std::max<int64_t>(0, N - 9); n < N; ++n)
    if (rows.back() != n) rows.push_back(n);
  return rows;
}

// The reference route's output: LowbitGemm::forward with the cuBLASLt kernel forced.
std::vector<uint16_t> cublaslt_bits(const Problem& p, const DeviceProblem& d) {
  LowbitGemm gemm;
  gemm.set_int8_kernel(Int8Kernel::kCublasLt);
  Output y(p);
  gemm.forward(y.buf.get(), d.xc.get(), d.sx.get(), d.wc.get(), d.sw.get(), p.N, p.K, p.M,
               LowbitRoute::kInt8, nullptr);
  return y.bits();
}

std::vector<uint16_t> sm90_bits(const Problem& p, const DeviceProblem& d, S8Sm90Tile tile,
                                int group_rows = 0) {
  Output y(p);
  cuda::s8_gemm_sm90(y.buf.get(), d.xc.get(), d.sx.get(), d.wc.get(), d.sw.get(), p.N, p.K, p.M,
                     nullptr, tile, group_rows);
  return y.bits();
}

void check_problem(const Problem& p, bool cpu_all_rows) {
  const DeviceProblem d(p);
  const auto ref = cublaslt_bits(p, d);
  EXPECT_TRUE(matches_cpu(p, ref, cpu_all_rows ? std::vector<int64_t>{} : sample_rows(p.N),
                          "cuBLASLt route " + describe(p)));
  // Tile orders: the default's, and bands of 5 row tiles (a shorter last band where the row
  // tiles are not a multiple of 5): every tile is still written exactly once.
  for (const S8Sm90Tile tile : kTiles)
    for (const int group_rows : {0, 5}) {
      const auto got = sm90_bits(p, d, tile, group_rows);
      EXPECT_TRUE(same_bits(got, ref, p.M,
                            std::string("sm90 ") + cuda::s8_gemm_sm90_tile_name(tile) +
                                " bands of " + std::to_string(group_rows) + " vs cuBLASLt " +
                                describe(p)));
    }
  // LowbitGemm's default (kAuto) takes the sm90 kernel here.
  LowbitGemm gemm;
  Output y(p);
  gemm.forward(y.buf.get(), d.xc.get(), d.sx.get(), d.wc.get(), d.sw.get(), p.N, p.K, p.M,
               LowbitRoute::kInt8, nullptr);
  EXPECT_TRUE(same_bits(y.bits(), ref, p.M, "LowbitGemm auto vs cuBLASLt " + describe(p)));
}

TEST(CudaS8Gemm, MatchesCpuSmallShapes) {
  QUEST_REQUIRE_S8_SM90();
  check_problem(random_problem(300, 384, 200, 8, 11), true);   // partial tiles both ways
  check_problem(random_problem(130, 208, 136, 7, 12), true);   // K tail (208 = 128 + 80)
  check_problem(random_problem(128, 256, 256, 3, 13), true);   // exactly one 128 x 256 tile
  check_problem(random_problem(1, 128, 8, 8, 14), true);       // one row, one column group
}

TEST(CudaS8Gemm, MatchesCublasLtRandom) {
  QUEST_REQUIRE_S8_SM90();
  struct S {
    int64_t N, K, M;
    int bits;
  };
  const S shapes[] = {{1000, 640, 1920, 4},  {777, 640, 640, 8},    {512, 1280, 3840, 2},
                      {600, 1792, 648, 7},   {384, 11008, 264, 4},  {2048, 4096, 1024, 8},
                      {257, 1280, 1288, 1},
                      // more tiles than an H100 has SMs: the persistent CTAs, ping-pong's two
                      // consumers included, take several tiles each (an odd count per CTA)
                      {4133, 640, 1288, 4}};
  uint64_t seed = 100;
  for (const S& s : shapes) check_problem(random_problem(s.N, s.K, s.M, s.bits, seed++), false);
}

// All codes equal: acc = K * c^2 everywhere (and its negative in rows with -c).
void check_constant(int c, int64_t N, int64_t K, int64_t M) {
  Rng rng(uint64_t(c) * 7 + 1);
  Problem p{N, K, M, std::vector<int8_t>(size_t(N * K), int8_t(c)),
            std::vector<int8_t>(size_t(M * K), int8_t(c)), rand_steps(rng, size_t(N)),
            rand_steps(rng, size_t(M))};
  for (int64_t n = 1; n < N; n += 5) std::fill_n(p.xc.begin() + n * K, K, int8_t(-c));
  const DeviceProblem d(p);
  const auto ref = cublaslt_bits(p, d);
  int64_t bad = 0;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t m = 0; m < M; ++m) {
      const int64_t acc = (n % 5 == 1 ? -1 : 1) * K * int64_t(c) * int64_t(c);
      bad += ref[size_t(n * M + m)] != reference_bits(acc, p.sx[size_t(n)], p.sw[size_t(m)]);
    }
  EXPECT_EQ(bad, 0) << "cuBLASLt route, all " << c << " over K = " << K;
  for (const S8Sm90Tile tile : kTiles)
    EXPECT_TRUE(same_bits(sm90_bits(p, d, tile), ref, M,
                          "all " + std::to_string(c) + " " + describe(p) + " " +
                              cuda::s8_gemm_sm90_tile_name(tile)));
}

TEST(CudaS8Gemm, WorstCaseExact) {
  QUEST_REQUIRE_S8_SM90();
  check_constant(127, 264, 11008, 520);  // |sum| = 177,549,632
  check_constant(15, 264, 11008, 520);   // 4-bit codes: 2,476,800
}

TEST(CudaS8Gemm, RejectsWhatItCannotTake) {
  QUEST_REQUIRE_S8_SM90();
  DeviceBuffer<int8_t> x(4096), w(4096);
  DeviceBuffer<float> s(64);
  DeviceBuffer<bf16> y(4096);
  EXPECT_THROW(cuda::s8_gemm_sm90(y, x, s, w, s, 8, 120, 8, nullptr), Error);   // K % 16
  EXPECT_THROW(cuda::s8_gemm_sm90(y, x, s, w, s, 8, 128, 12, nullptr), Error);  // M % 8
  EXPECT_THROW(cuda::s8_gemm_sm90(y, x + 1, s, w, s, 8, 128, 8, nullptr), Error);  // alignment
  EXPECT_THROW(cuda::s8_gemm_sm90(y, x, s, w, s, 8, 128, 8, nullptr, S8Sm90Tile::kAuto, -1),
               Error);  // band height
  EXPECT_FALSE(cuda::s8_gemm_sm90_supports(y, x, s, w, s, 8, 120, 8));
  // LowbitGemm falls back to cuBLASLt for shapes the kernel does not take (M % 8 != 0).
  LowbitGemm gemm;
  EXPECT_NO_THROW(gemm.forward(y, x, s, w, s, 8, 128, 12, LowbitRoute::kInt8, nullptr));
  gemm.set_int8_kernel(Int8Kernel::kSm90);
  EXPECT_THROW(gemm.forward(y, x, s, w, s, 8, 128, 12, LowbitRoute::kInt8, nullptr), Error);
  cuda_test::sync();
}

}  // namespace
}  // namespace quest
