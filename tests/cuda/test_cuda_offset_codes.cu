// The offset form of the int8 route's codes (src/quant/cuda/offset_codes.h): every writer of
// offset codes against its own signed form on the same input, and every product on offset codes
// against the same product on the signed codes they stand for.
// - Quantizers (lowbit_quantize's row teams, bf16 and fp32 rows; lowbit_quantize_fast;
//   DeviceQuantizer::forward_with_codes; the RMSNorm and SwiGLU producer-fused forwards): with
//   sums, codes u = (c + z) / 2 byte for byte of the signed run's c (z = 2^bits - 1), the row
//   sums exact, steps and masks bitwise. Rows of one warp and of teams of 2 to 8 warps
//   (cols 256 .. 16384; the fast quantizer's persistent CTAs over more rows than they are), a zero
//   row and rows with an inf or a NaN (the exact per-entry paths).
// - Products (s8_gemm_sm90 with each tile and LowbitGemm over both kernels): bf16 outputs bitwise
//   equal to the signed codes' cuBLASLt route, at 1 to 7 bits, different widths for x and w,
//   partial tiles, a K tail (zero-filled offset codes add nothing; the correction uses the true
//   K), and the extremes (all codes at the top or the bottom of the grid over K = 11008).
// Skipped without a CUDA device; the sm_90 kernel's cases where it is not available.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "cuda/cuda_test_util.h"
#include "ops/cuda_ops.h"
#include "quant/cuda/cuda_quant.h"
#include "quant/cuda/lowbit_gemm.h"
#include "quant/cuda/offset_codes.h"
#include "quant/cuda/s8_gemm_sm90.h"
#include "quant/quant_spec.h"

namespace quest {
namespace {

using cuda::bf16;
using cuda::Int8Kernel;
using cuda::LowbitGemm;
using cuda::LowbitQuant;
using cuda::LowbitRoute;
using cuda::OffsetCodes;
using cuda::S8Sm90Tile;
using cuda_test::DeviceBuffer;
using cuda_test::download;
using cuda_test::upload;

// u = (c + z) / 2 of each odd code; the row sums of u.
std::vector<int8_t> to_offset(const std::vector<int8_t>& c, int bits) {
  const int z = (1 << bits) - 1;
  std::vector<int8_t> u(c.size());
  for (size_t i = 0; i < c.size(); ++i) u[i] = int8_t((int(c[i]) + z) / 2);
  return u;
}
std::vector<int32_t> row_sums(const std::vector<int8_t>& u, int64_t rows, int64_t cols) {
  std::vector<int32_t> s(size_t(rows), 0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < cols; ++k) s[size_t(r)] += u[size_t(r * cols + k)];
  return s;
}

// Offset codes and sums from a device run against the signed run's codes: counts mismatches.
::testing::AssertionResult offset_of(const std::vector<int8_t>& signed_codes, int bits,
                                     const std::vector<int8_t>& got_codes,
                                     const std::vector<int32_t>& got_sums, int64_t rows,
                                     int64_t cols, const std::string& what) {
  const std::vector<int8_t> want = to_offset(signed_codes, bits);
  int64_t bad = 0;
  std::string first;
  for (size_t i = 0; i < want.size(); ++i)
    if (got_codes[i] != want[i] && bad++ < 3)
      first += " code [" + std::to_string(int64_t(i) / cols) + "," +
               std::to_string(int64_t(i) % cols) + "] " + std::to_string(got_codes[i]) +
               " want " + std::to_string(want[i]);
  const std::vector<int32_t> sums = row_sums(want, rows, cols);
  for (int64_t r = 0; r < rows; ++r)
    if (got_sums[size_t(r)] != sums[size_t(r)] && bad++ < 6)
      first += " sum [" + std::to_string(r) + "] " + std::to_string(got_sums[size_t(r)]) +
               " want " + std::to_string(sums[size_t(r)]);
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << what << ": " << bad << " differences;" << first;
}

std::string shape(int64_t rows, int64_t cols, int bits) {
  return std::to_string(rows) + " x " + std::to_string(cols) + " " + std::to_string(bits) +
         "-bit";
}

// Rows of random scales, row 0 zero, row 1 with an inf, row 2 with a NaN (when rows > 2).
std::vector<float> make_rows(int64_t rows, int64_t cols, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> x(size_t(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    const double scale = std::exp(rng.uniform() * 6.0 - 3.0);
    for (int64_t i = 0; i < cols; ++i)
      x[size_t(r * cols + i)] = cuda_test::round_bf16(float(rng.normal() * scale));
  }
  if (rows > 2) {
    std::fill_n(x.begin(), cols, 0.0f);
    x[size_t(cols + cols / 2)] = std::numeric_limits<float>::infinity();
    x[size_t(2 * cols + 7)] = std::numeric_limits<float>::quiet_NaN();
  }
  return x;
}

LowbitQuant trust(int bits) {
  return LowbitQuant::from_spec(QuantSpec::parse("hadamard-trust:" + std::to_string(bits)));
}

TEST(CudaOffsetCodes, LowbitQuantizeRowTeams) {
  QUEST_REQUIRE_CUDA();
  struct S {
    int64_t rows, cols;
    int bits;
  };
  // One warp a row (256, 640), teams of 2, 4 and 8 warps (4096, 11008, 16384).
  const S shapes[] = {{37, 256, 4}, {70, 640, 1}, {33, 4096, 7}, {19, 11008, 4}, {9, 16384, 2}};
  uint64_t seed = 1;
  for (const S& s : shapes) {
    const std::vector<float> xf = make_rows(s.rows, s.cols, seed++);
    const auto xb = cuda_test::upload_bf16(xf);
    const auto x32 = upload(xf);
    const LowbitQuant q = trust(s.bits);
    const size_t n = size_t(s.rows * s.cols), words = size_t(s.rows * (s.cols / 64));
    for (const bool fp32 : {false, true}) {
      DeviceBuffer<int8_t> c0(n), c1(n);
      DeviceBuffer<float> st0(size_t(s.rows)), st1(size_t(s.rows));
      DeviceBuffer<uint64_t> m0(words), m1(words);
      DeviceBuffer<int32_t> sums(size_t(s.rows));
      auto run = [&](int8_t* c, float* st, uint64_t* m, int32_t* sm) {
        if (fp32)
          cuda::lowbit_quantize(x32.get(), c, st, m, s.rows, s.cols, q, LowbitRoute::kInt8,
                                nullptr, cuda::LowbitQuantKernel::kAuto, sm);
        else
          cuda::lowbit_quantize(xb.get(), c, st, m, s.rows, s.cols, q, LowbitRoute::kInt8,
                                nullptr, cuda::LowbitQuantKernel::kRowTeams, sm);
      };
      run(c0.get(), st0.get(), m0.get(), nullptr);
      run(c1.get(), st1.get(), m1.get(), sums.get());
      const std::string what =
          std::string("lowbit_quantize ") + (fp32 ? "fp32 " : "bf16 ") + shape(s.rows, s.cols, s.bits);
      EXPECT_TRUE(offset_of(download(c0), s.bits, download(c1), download(sums), s.rows, s.cols,
                            what));
      EXPECT_TRUE(cuda_test::bit_equal(download(st1), download(st0), what + ": steps"));
      EXPECT_EQ(download(m0), download(m1)) << what << ": masks";
    }
  }
  // The staged kernels write no offset codes.
  DeviceBuffer<bf16> x(256);
  DeviceBuffer<int8_t> c(256);
  DeviceBuffer<int32_t> sums(1);
  EXPECT_THROW(cuda::lowbit_quantize(x.get(), c.get(), nullptr, nullptr, 1, 256, trust(4),
                                     LowbitRoute::kInt8, nullptr,
                                     cuda::LowbitQuantKernel::kStagedRows, sums.get()),
               Error);
}

TEST(CudaOffsetCodes, LowbitQuantizeFast) {
  QUEST_REQUIRE_CUDA();
  struct S {
    int64_t rows, cols;
    int bits;
  };
  // Many rows per persistent CTA (the deferred row sums), and fewer rows than CTAs.
  const S shapes[] = {{2000, 128, 4}, {900, 640, 7}, {700, 4096, 1}, {300, 11008, 4},
                      {5, 32768, 3},  {1, 1024, 2}};
  uint64_t seed = 50;
  for (const S& s : shapes) {
    const auto xb = cuda_test::upload_bf16(make_rows(s.rows, s.cols, seed++));
    const size_t n = size_t(s.rows * s.cols);
    DeviceBuffer<int8_t> c0(n), c1(n);
    DeviceBuffer<float> st0(size_t(s.rows)), st1(size_t(s.rows));
    DeviceBuffer<int32_t> sums(size_t(s.rows));
    const LowbitQuant q = trust(s.bits);
    cuda::lowbit_quantize_fast(xb.get(), c0.get(), st0.get(), s.rows, s.cols, q, nullptr);
    cuda::lowbit_quantize_fast(xb.get(), c1.get(), st1.get(), s.rows, s.cols, q, nullptr,
                               sums.get());
    const std::string what = "lowbit_quantize_fast " + shape(s.rows, s.cols, s.bits);
    EXPECT_TRUE(offset_of(download(c0), s.bits, download(c1), download(sums), s.rows, s.cols,
                          what));
    EXPECT_TRUE(cuda_test::bit_equal(download(st1), download(st0), what + ": steps"));
  }
}

TEST(CudaOffsetCodes, DeviceQuantizerAndFusedProducers) {
  QUEST_REQUIRE_CUDA();
  for (const auto& [rows, cols, bits] :
       std::vector<std::tuple<int64_t, int64_t, int>>{{40, 640, 4}, {24, 4096, 2}, {9, 11008, 7}}) {
    const QuantSpec spec = QuantSpec::parse("hadamard-trust:" + std::to_string(bits));
    const std::vector<float> xf = make_rows(rows, cols, uint64_t(cols + bits));
    const auto x32 = upload(xf);
    const auto xb = cuda_test::upload_bf16(xf);
    const size_t n = size_t(rows * cols);
    DeviceBuffer<bf16> xq0(n), xq1(n), g(n);
    DeviceBuffer<int8_t> c0(n), c1(n);
    DeviceBuffer<int32_t> sums{size_t(rows)};
    const auto nw = upload(std::vector<float>(size_t(cols), 1.25f));
    DeviceBuffer<float> rstd{size_t(rows)};
    cuda::DeviceQuantizer q0(spec, QuantRole::Input, rows, cols),
        q1(spec, QuantRole::Input, rows, cols);
    const std::string what = shape(rows, cols, bits);
    auto check = [&](const std::string& op) {
      EXPECT_TRUE(offset_of(download(c0), bits, download(c1), download(sums), rows, cols,
                            op + " " + what));
      EXPECT_TRUE(cuda_test::bit_equal(cuda_test::download_bf16(xq1), cuda_test::download_bf16(xq0)))
          << op << " " << what << ": xq";
      EXPECT_TRUE(cuda_test::bit_equal(download(q1.row_steps(), size_t(rows)),
                                       download(q0.row_steps(), size_t(rows)),
                                       op + " " + what + ": steps"));
    };
    q0.forward_with_codes(xb.get(), xq0.get(), c0.get(), rows, nullptr);
    q1.forward_with_codes(xb.get(), xq1.get(), {c1.get(), sums.get()}, rows, nullptr);
    check("forward_with_codes bf16");
    q0.forward_with_codes(x32.get(), xq0.get(), c0.get(), rows, nullptr);
    q1.forward_with_codes(x32.get(), xq1.get(), {c1.get(), sums.get()}, rows, nullptr);
    check("forward_with_codes fp32");
    ASSERT_TRUE(q0.forward_rmsnorm(x32.get(), nw.get(), 1e-5f, rstd.get(), nullptr, xq0.get(),
                                   c0.get(), rows, nullptr));
    ASSERT_TRUE(q1.forward_rmsnorm(x32.get(), nw.get(), 1e-5f, rstd.get(), nullptr, xq1.get(),
                                   {c1.get(), sums.get()}, rows, nullptr));
    check("forward_rmsnorm");
    ASSERT_TRUE(q0.forward_swiglu(xb.get(), xb.get(), nullptr, xq0.get(), c0.get(), rows, nullptr));
    ASSERT_TRUE(q1.forward_swiglu(xb.get(), xb.get(), g.get(), xq1.get(), {c1.get(), sums.get()},
                                  rows, nullptr));
    check("forward_swiglu");
    EXPECT_THROW(q1.forward_with_codes(xb.get(), xq1.get(), {nullptr, sums.get()}, rows, nullptr),
                 Error);
  }
}

// ---- products --------------------------------------------------------------------------------

struct Operands {
  int64_t N, K, M;
  int xbits, wbits;
  std::vector<int8_t> xc, wc;  // signed
  std::vector<float> sx, sw;
};

// y of the signed codes through the cuBLASLt route, and of the offset codes through `run`.
struct ProductCheck {
  const Operands& p;
  DeviceBuffer<int8_t> xs, ws, xu, wu;
  DeviceBuffer<int32_t> xsum, wsum;
  DeviceBuffer<float> sx, sw;
  OffsetCodes off;
  std::vector<uint16_t> want;
  explicit ProductCheck(const Operands& o)
      : p(o), xs(upload(o.xc)), ws(upload(o.wc)), xu(upload(to_offset(o.xc, o.xbits))),
        wu(upload(to_offset(o.wc, o.wbits))),
        xsum(upload(row_sums(to_offset(o.xc, o.xbits), o.N, o.K))),
        wsum(upload(row_sums(to_offset(o.wc, o.wbits), o.M, o.K))), sx(upload(o.sx)),
        sw(upload(o.sw)), off{xsum.get(), wsum.get(), o.xbits, o.wbits} {
    LowbitGemm gemm;
    gemm.set_int8_kernel(Int8Kernel::kCublasLt);
    DeviceBuffer<bf16> y(size_t(p.N * p.M));
    gemm.forward(y.get(), xs.get(), sx.get(), ws.get(), sw.get(), p.N, p.K, p.M,
                 LowbitRoute::kInt8, nullptr);
    want = bits_of(y);
  }
  static std::vector<uint16_t> bits_of(const DeviceBuffer<bf16>& y) {
    return download(reinterpret_cast<const uint16_t*>(y.get()), y.size());
  }
  ::testing::AssertionResult same(const DeviceBuffer<bf16>& y, const std::string& what) const {
    const std::vector<uint16_t> got = bits_of(y);
    int64_t bad = 0;
    for (size_t i = 0; i < got.size(); ++i) bad += got[i] != want[i];
    if (bad == 0) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure()
           << what << " N=" << p.N << " K=" << p.K << " M=" << p.M << " W" << p.wbits << "A"
           << p.xbits << ": " << bad << " of " << got.size() << " outputs differ";
  }
  void check_all() const {
    DeviceBuffer<bf16> y(size_t(p.N * p.M));
    for (const Int8Kernel k : {Int8Kernel::kCublasLt, Int8Kernel::kAuto}) {
      LowbitGemm gemm;
      gemm.set_int8_kernel(k);
      y.fill_nan();
      gemm.forward(y.get(), xu.get(), sx.get(), wu.get(), sw.get(), p.N, p.K, p.M,
                   LowbitRoute::kInt8, nullptr, &off);
      EXPECT_TRUE(same(y, k == Int8Kernel::kAuto ? "LowbitGemm auto" : "LowbitGemm cuBLASLt"));
    }
    if (!cuda::s8_gemm_sm90_available()) return;
    for (const S8Sm90Tile tile : {S8Sm90Tile::k128x256, S8Sm90Tile::k128x128,
                                  S8Sm90Tile::k128x256p, S8Sm90Tile::k128x128pp,
                                  S8Sm90Tile::k64x256pp}) {
      y.fill_nan();
      cuda::s8_gemm_sm90(y.get(), xu.get(), sx.get(), wu.get(), sw.get(), p.N, p.K, p.M, nullptr,
                         tile, 0, &off);
      EXPECT_TRUE(same(y, std::string("s8_gemm_sm90 ") + cuda::s8_gemm_sm90_tile_name(tile)));
    }
  }
};

Operands random_operands(int64_t N, int64_t K, int64_t M, int xbits, int wbits, uint64_t seed) {
  Rng rng(seed);
  Operands p{N, K, M, xbits, wbits, cuda_test::rand_odd_codes(rng, size_t(N * K), xbits),
             cuda_test::rand_odd_codes(rng, size_t(M * K), wbits), {}, {}};
  p.sx = cuda_test::rand_steps(rng, size_t(N));
  p.sw = cuda_test::rand_steps(rng, size_t(M));
  return p;
}

TEST(CudaOffsetCodes, ProductsEqualTheSignedCodes) {
  QUEST_REQUIRE_CUDA();
  struct S {
    int64_t N, K, M;
    int xbits, wbits;
  };
  const S shapes[] = {{300, 384, 200, 4, 4},   {130, 208, 136, 7, 7},   {1000, 640, 1920, 4, 2},
                      {257, 1280, 1288, 1, 1}, {384, 11008, 264, 4, 7}, {4133, 640, 1288, 3, 4},
                      {512, 4096, 1024, 6, 5}};
  uint64_t seed = 200;
  for (const S& s : shapes)
    ProductCheck(random_operands(s.N, s.K, s.M, s.xbits, s.wbits, seed++)).check_all();
}

TEST(CudaOffsetCodes, ProductsExactAtTheExtremes) {
  QUEST_REQUIRE_CUDA();
  // All codes at the top of the grid (u = z, the largest sums: 11008 * 127^2 = 177,549,632),
  // and x at the top against w at the bottom (u = 0: the correction alone).
  for (const int bits : {7, 4})
    for (const int wsign : {1, -1}) {
      Rng rng(uint64_t(bits * 10 + wsign + 5));
      const int z = (1 << bits) - 1;
      const int64_t N = 264, K = 11008, M = 520;
      Operands p{N, K, M, bits, bits, std::vector<int8_t>(size_t(N * K), int8_t(z)),
                 std::vector<int8_t>(size_t(M * K), int8_t(wsign * z)),
                 cuda_test::rand_steps(rng, size_t(N)), cuda_test::rand_steps(rng, size_t(M))};
      ProductCheck(p).check_all();
    }
}

TEST(CudaOffsetCodes, ProductRejectsBadOffsets) {
  QUEST_REQUIRE_CUDA();
  DeviceBuffer<int8_t> x(4096), w(4096);
  DeviceBuffer<float> s(64);
  DeviceBuffer<int32_t> sums(64);
  DeviceBuffer<bf16> y(4096);
  LowbitGemm gemm;
  const OffsetCodes no_w{sums.get(), nullptr, 4, 4}, wide{sums.get(), sums.get(), 8, 4},
      misaligned{sums.get(), sums.get() + 1, 4, 4};
  for (const OffsetCodes& bad : {no_w, wide, misaligned})
    EXPECT_THROW(gemm.forward(y.get(), x.get(), s.get(), w.get(), s.get(), 8, 128, 8,
                              LowbitRoute::kInt8, nullptr, &bad),
                 Error);
  const OffsetCodes good{sums.get(), sums.get(), 4, 4};
  EXPECT_THROW(gemm.forward(y.get(), x.get(), s.get(), w.get(), s.get(), 8, 128, 8,
                            LowbitRoute::kFp8, nullptr, &good),
               Error);
  cuda_test::sync();
}

}  // namespace
}  // namespace quest
