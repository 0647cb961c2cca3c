// The low-precision forward product (src/quant/cuda/lowbit_gemm.h):
// - CudaLowbitQuant.*: the fused code quantizer against DeviceQuantizer on the same input: steps
//   and masks bitwise, and each code c gives bitwise DeviceQuantizer's xq through
//   q = (c + 1) / 2, xq = q * step - step / 2 (its own operations). Bits 1..7, Hadamard and plain
//   trust/clip/ste, bf16 activations and fp32 weights, both code types.
// - CudaLowbitGemm.Int8Sums*: the IMMA sums equal the exact integer sums (random codes of every
//   width, and the worst case: all +-127 over K = 11008).
// - CudaLowbitGemm.Fp8SumsExactRandom, CudaLowbitFp8WorstCase.*: the FP8 route's sums (fast
//   accumulation off) equal the exact integer sums: random codes and the worst cases (all +top,
//   random signs of top, top among ones) over K = 11008, for every width the route takes. On the
//   H100 (cuBLASLt 13.1) 4-bit codes FAIL the all +15 case (2,474,050 instead of 2,476,800: the
//   FP8 tensor cores drop low bits of large partial sums even with fast accumulation off), so the
//   route stops at 3 bits (kLowbitMaxBitsFp8); 1..3 bits pass every case. If this fails on a
//   device, the FP8 route must not be used there.
// - CudaLowbitGemm.Forward*: quantize + product at model shapes equals the product of
//   DeviceQuantizer's dequantized operands (computed in double on the host) up to fp32 rounding
//   and the bf16 rounding of the output, for every route and width it supports.
#include <cuda_fp8.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "cuda/cuda_test_util.h"
#include "quant/cuda/cuda_quant.h"
#include "quant/cuda/lowbit_gemm.h"
#include "quant/quant_spec.h"

namespace quest {
namespace {

using cuda::bf16;
using cuda::DeviceQuantizer;
using cuda::LowbitGemm;
using cuda::LowbitQuant;
using cuda::LowbitRoute;
using cuda::LowbitQuantKernel;
using cuda::QuantForm;
using cuda_test::DeviceBuffer;
using cuda_test::download;
using cuda_test::download_bf16;
using cuda_test::round_bf16;
using cuda_test::upload;
using cuda_test::upload_bf16;

// Rows of very different scales with 1% outliers (every grid clips), plus edge rows: all zero,
// constant, a single non-zero entry.
std::vector<float> make_input(int64_t rows, int64_t cols, uint64_t seed, double base = 1.0) {
  Rng rng(seed);
  std::vector<float> x(static_cast<size_t>(rows * cols), 0.0f);
  for (int64_t r = 0; r < rows; ++r) {
    float* xr = x.data() + r * cols;
    if (r == 0) continue;
    if (r == 1) {
      std::fill_n(xr, cols, 0.5f);
      continue;
    }
    if (r == 2) {
      xr[cols / 3] = -3.0f;
      continue;
    }
    const double scale = base * std::exp(rng.uniform() * 6.0 - 3.0);
    for (int64_t i = 0; i < cols; ++i) {
      double v = rng.normal() * scale;
      if (rng.uniform() < 0.01) v *= 10.0;
      xr[i] = float(v);
    }
  }
  return x;
}

// Random odd codes of `bits` bits: 2u - (2^b - 1), u uniform in [0, 2^b).
std::vector<int8_t> random_codes(Rng& rng, size_t n, int bits) {
  std::vector<int8_t> c(n);
  const int top = (1 << bits) - 1;
  for (auto& v : c) v = int8_t(2 * int(rng.below(uint64_t(1) << bits)) - top);
  return c;
}

uint8_t to_e4m3(int code) {
  return uint8_t(__nv_cvt_float_to_fp8(float(code), __NV_SATFINITE, __NV_E4M3));
}
std::vector<uint8_t> to_e4m3(const std::vector<int8_t>& c) {
  std::vector<uint8_t> e(c.size());
  for (size_t i = 0; i < c.size(); ++i) e[i] = to_e4m3(c[i]);
  return e;
}
// e4m3 byte -> value (host decoder; exact for every finite byte).
float from_e4m3(uint8_t b) {
  const int s = b >> 7, e = (b >> 3) & 15, m = b & 7;
  const float mag = e == 0 ? std::ldexp(float(m), -9) : std::ldexp(1.0f + float(m) / 8.0f, e - 7);
  return s ? -mag : mag;
}

// Exact integer sums of the rows `rows` of acc[N, M] = xc[N, K] . wc[M, K]^T.
std::vector<int64_t> int_sums(const std::vector<int8_t>& xc, const std::vector<int8_t>& wc,
                              const std::vector<int64_t>& rows, int64_t K, int64_t M) {
  std::vector<int64_t> out(rows.size() * static_cast<size_t>(M));
  for (size_t i = 0; i < rows.size(); ++i) {
    const int8_t* xr = xc.data() + rows[i] * K;
    for (int64_t m = 0; m < M; ++m) {
      const int8_t* wr = wc.data() + m * K;
      int32_t s = 0;  // |s| < 2^31 for the shapes used here (checked by the caller's bound)
      for (int64_t k = 0; k < K; ++k) s += int32_t(xr[k]) * int32_t(wr[k]);
      out[i * static_cast<size_t>(M) + static_cast<size_t>(m)] = s;
    }
  }
  return out;
}

// Every row for small N, else 3 fixed rows plus a stride sample (both tile edges included).
std::vector<int64_t> sample_rows(int64_t N, int64_t max_rows = 96) {
  std::vector<int64_t> r;
  if (N <= max_rows) {
    for (int64_t n = 0; n < N; ++n) r.push_back(n);
    return r;
  }
  const int64_t stride = N / (max_rows - 3);
  for (int64_t n = 0; n < N; n += stride) r.push_back(n);
  for (const int64_t n : {int64_t(1), N - 2, N - 1}) r.push_back(n);
  std::sort(r.begin(), r.end());
  r.erase(std::unique(r.begin(), r.end()), r.end());
  return r;
}

::testing::AssertionResult sums_equal(const std::vector<int64_t>& expect,
                                      const std::vector<double>& actual,
                                      const std::vector<int64_t>& rows, int64_t M,
                                      const std::string& what) {
  int64_t bad = 0;
  std::ostringstream first;
  for (size_t i = 0; i < rows.size(); ++i)
    for (int64_t m = 0; m < M; ++m) {
      const size_t j = i * static_cast<size_t>(M) + static_cast<size_t>(m);
      if (double(expect[j]) != actual[j] && bad++ == 0)
        first << "row " << rows[i] << " col " << m << ": got " << actual[j] << ", exact "
              << expect[j];
    }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << what << ": " << bad << " of " << rows.size() * M
                                       << " sums differ; first " << first.str();
}

// ---- the code quantizer against DeviceQuantizer -------------------------------------------
struct QuantCase {
  std::string spec;
  int64_t cols;
};

void PrintTo(const QuantCase& c, std::ostream* os) { *os << c.spec << " K=" << c.cols; }

class CudaLowbitQuant : public ::testing::TestWithParam<QuantCase> {};

template <class TIn>
void check_against_device_quantizer(const QuantSpec& spec, QuantRole role,
                                    const std::vector<float>& xin, int64_t rows, int64_t cols,
                                    LowbitRoute route, LowbitQuantKernel kernel) {
  // The same input for both: bf16-rounded for activations, fp32 for weights.
  DeviceBuffer<TIn> x;
  if constexpr (std::is_same_v<TIn, bf16>)
    x = upload_bf16(xin);
  else
    x = upload(xin);
  DeviceQuantizer dq(spec, role, rows, cols);
  DeviceBuffer<float> xq(static_cast<size_t>(rows * cols));
  dq.forward(x.get(), xq.get(), rows, spec.hadamard ? QuantForm::Half : QuantForm::Full, nullptr);
  const auto ref_xq = download(xq);
  const auto ref_step = download(dq.row_steps(), static_cast<size_t>(rows));
  const int64_t wpr = cols / 64;
  std::vector<uint64_t> ref_mask;
  if (dq.mask()) ref_mask = download(dq.mask(), static_cast<size_t>(rows * wpr));

  const LowbitQuant q = LowbitQuant::from_spec(spec);
  DeviceBuffer<uint8_t> codes(static_cast<size_t>(rows * cols));
  DeviceBuffer<float> step(static_cast<size_t>(rows));
  DeviceBuffer<uint64_t> mask(static_cast<size_t>(rows * wpr));
  codes.fill_nan(), step.fill_nan(), mask.fill_nan();
  cuda::lowbit_quantize(x.get(), codes.get(), step.get(), q.rule ? mask.get() : nullptr, rows, cols,
                        q, route, nullptr, kernel);
  cuda_test::sync();
  const auto c = download(codes);
  const auto st = download(step);

  const std::string what = spec.to_string() + (route == LowbitRoute::kFp8 ? " (fp8" : " (int8") +
                           (kernel == LowbitQuantKernel::kStagedRows ? ", staged rows)" : ")");
  EXPECT_TRUE(cuda_test::bit_equal(st, ref_step, what + " steps"));
  if (q.rule) {
    const auto m = download(mask);
    int64_t bad = 0;
    for (size_t i = 0; i < m.size(); ++i) bad += m[i] != ref_mask[i];
    EXPECT_EQ(bad, 0) << what << ": mask words differ";
  }
  const int top = (1 << q.bits) - 1;
  int64_t bad = 0;
  std::ostringstream first;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < cols; ++k) {
      const size_t i = static_cast<size_t>(r * cols + k);
      const float code = route == LowbitRoute::kFp8 ? from_e4m3(c[i]) : float(int8_t(c[i]));
      const float qv = (code + 1.0f) / 2.0f;  // exact
      const float s = ref_step[static_cast<size_t>(r)];
      const volatile float prod = qv * s, half = 0.5f * s;  // no contraction: DeviceQuantizer's ops
      const float v = prod - half;
      const bool odd = std::fabs(std::fmod(code, 2.0f)) == 1.0f && std::fabs(code) <= float(top);
      if (!odd || std::bit_cast<uint32_t>(v) != std::bit_cast<uint32_t>(ref_xq[i])) {
        if (bad++ == 0)
          first << "row " << r << " col " << k << ": code " << code << " -> " << v
                << ", DeviceQuantizer xq " << ref_xq[i] << " (step " << s << ")";
      }
    }
  EXPECT_EQ(bad, 0) << what << ": codes differ from DeviceQuantizer's values; first " << first.str();
}

TEST_P(CudaLowbitQuant, MatchesDeviceQuantizer) {
  QUEST_REQUIRE_CUDA();
  const QuantCase& pc = GetParam();
  const QuantSpec spec = QuantSpec::parse(pc.spec);
  const int64_t rows = 300, cols = pc.cols;
  const std::vector<float> act = make_input(rows, cols, 11 + cols);
  const std::vector<float> wt = make_input(rows, cols, 29 + cols, 0.02);
  // kRowTeams (kAuto takes it up to 12288 entries) for the int8 route with the transform, kAuto
  // (its routing to the staged kernels) elsewhere; kStagedRows runs those kernels on every case.
  for (const LowbitRoute route : {LowbitRoute::kInt8, LowbitRoute::kFp8}) {
    if (!cuda::lowbit_supported(route, spec.bits)) continue;
    const bool teams = route == LowbitRoute::kInt8 && spec.hadamard;
    for (const LowbitQuantKernel kernel :
         {teams ? LowbitQuantKernel::kRowTeams : LowbitQuantKernel::kAuto,
          LowbitQuantKernel::kStagedRows}) {
      check_against_device_quantizer<bf16>(spec, QuantRole::Input, act, rows, cols, route, kernel);
      check_against_device_quantizer<float>(spec, QuantRole::Weight, wt, rows, cols, route, kernel);
    }
  }
}

std::vector<QuantCase> quant_cases() {
  std::vector<QuantCase> v;
  for (int b = 1; b <= 7; ++b) v.push_back({"hadamard-trust:" + std::to_string(b), 1792});
  for (const int64_t k : {640, 1280, 4096, 11008}) v.push_back({"hadamard-trust:4", k});
  v.push_back({"trust:4", 1280});
  v.push_back({"hadamard-clip:3:c=1.2", 640});
  v.push_back({"ste:2", 640});
  v.push_back({"hadamard-ste:7", 1280});
  return v;
}

INSTANTIATE_TEST_SUITE_P(Specs, CudaLowbitQuant, ::testing::ValuesIn(quant_cases()),
                         [](const ::testing::TestParamInfo<QuantCase>& info) {
                           std::string s = info.param.spec + "_K" + std::to_string(info.param.cols);
                           for (char& ch : s)
                             if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           return s;
                         });

TEST(CudaLowbitQuantErrors, RejectsWhatHasNoCodes) {
  QUEST_REQUIRE_CUDA();
  DeviceBuffer<bf16> x(static_cast<size_t>(4 * 256));
  DeviceBuffer<int8_t> c(static_cast<size_t>(4 * 256));
  DeviceBuffer<float> s(4);
  LowbitQuant q;
  q.bits = 8;  // +-255 does not fit int8
  EXPECT_THROW(cuda::lowbit_quantize(x.get(), c.get(), s.get(), nullptr, 4, 256, q,
                                     LowbitRoute::kInt8, nullptr),
               Error);
  q.bits = 4;  // +-15 is exact in e4m3, but FP8 sums of 4-bit codes are not (Fp8WorstCase)
  EXPECT_THROW(cuda::lowbit_quantize(x.get(), c.get(), s.get(), nullptr, 4, 256, q,
                                     LowbitRoute::kFp8, nullptr),
               Error);
  q.bits = 4;  // K not a multiple of 128
  EXPECT_THROW(cuda::lowbit_quantize(x.get(), c.get(), s.get(), nullptr, 4, 200, q,
                                     LowbitRoute::kInt8, nullptr),
               Error);
  // The row-team kernel only where it applies: the int8 route with the transform.
  q = LowbitQuant::from_spec(QuantSpec::parse("hadamard-trust:2"));
  EXPECT_THROW(cuda::lowbit_quantize(x.get(), c.get(), s.get(), nullptr, 4, 256, q,
                                     LowbitRoute::kFp8, nullptr, LowbitQuantKernel::kRowTeams),
               Error);
  q = LowbitQuant::from_spec(QuantSpec::parse("trust:2"));
  EXPECT_THROW(cuda::lowbit_quantize(x.get(), c.get(), s.get(), nullptr, 4, 256, q,
                                     LowbitRoute::kInt8, nullptr, LowbitQuantKernel::kRowTeams),
               Error);
  EXPECT_THROW(LowbitQuant::from_spec(QuantSpec::parse("lsq:4")), Error);
  EXPECT_THROW(LowbitQuant::from_spec(QuantSpec::parse("hadamard-fp4")), Error);
  EXPECT_FALSE(cuda::lowbit_supported(LowbitRoute::kInt8, 8));
  EXPECT_TRUE(cuda::lowbit_supported(LowbitRoute::kInt8, 7));
  EXPECT_TRUE(cuda::lowbit_supported(LowbitRoute::kFp8, 3));
  EXPECT_FALSE(cuda::lowbit_supported(LowbitRoute::kFp8, 4));  // exact codes, inexact sums
}

// ---- exact sums ----------------------------------------------------------------------------
struct Shape {
  int64_t N, K, M;
};

TEST(CudaLowbitGemm, Int8SumsExactRandom) {
  QUEST_REQUIRE_CUDA();
  LowbitGemm gemm;
  Rng rng(5);
  const Shape shapes[] = {{512, 640, 1920}, {1024, 1280, 1792}, {2048, 1792, 640},
                          {4096, 4096, 1920}, {160, 11008, 640}};
  int bits = 1;
  for (const Shape& s : shapes) {
    for (int b = 0; b < 2; ++b, bits = bits % 7 + 1) {
      const auto xc = random_codes(rng, static_cast<size_t>(s.N * s.K), bits);
      const auto wc = random_codes(rng, static_cast<size_t>(s.M * s.K), bits);
      const auto dx = upload(xc);
      const auto dw = upload(wc);
      DeviceBuffer<int32_t> acc(static_cast<size_t>(s.N * s.M));
      acc.fill_nan();
      gemm.int8_sums(acc.get(), dx.get(), dw.get(), s.N, s.K, s.M, nullptr);
      const auto got = download(acc);
      const auto rows = sample_rows(s.N);
      const auto expect = int_sums(xc, wc, rows, s.K, s.M);
      std::vector<double> actual(expect.size());
      for (size_t i = 0; i < rows.size(); ++i)
        for (int64_t m = 0; m < s.M; ++m)
          actual[i * static_cast<size_t>(s.M) + static_cast<size_t>(m)] = got[static_cast<size_t>(rows[i] * s.M + m)];
      EXPECT_TRUE(sums_equal(expect, actual, rows, s.M,
                             "int8 " + std::to_string(bits) + "-bit N=" + std::to_string(s.N) +
                                 " K=" + std::to_string(s.K) + " M=" + std::to_string(s.M)));
    }
  }
}

// Worst case of the widest codes: every product +127^2 (and -127^2 rows), K = 11008:
// |sum| = 177,549,632 (28 bits).
TEST(CudaLowbitGemm, Int8SumsExactWorstCase) {
  QUEST_REQUIRE_CUDA();
  const int64_t N = 256, K = 11008, M = 640;
  Rng rng(7);
  std::vector<int8_t> xc(static_cast<size_t>(N * K), 127), wc(static_cast<size_t>(M * K), 127);
  for (int64_t n = 0; n < N; n += 2) std::fill_n(xc.begin() + n * K, K, int8_t(-127));
  for (int64_t m = 1; m < M; m += 3)  // random signs in every third row of w
    for (int64_t k = 0; k < K; ++k) wc[static_cast<size_t>(m * K + k)] = rng.below(2) ? 127 : -127;
  LowbitGemm gemm;
  const auto dx = upload(xc);
  const auto dw = upload(wc);
  DeviceBuffer<int32_t> acc(static_cast<size_t>(N * M));
  gemm.int8_sums(acc.get(), dx.get(), dw.get(), N, K, M, nullptr);
  const auto got = download(acc);
  const auto rows = sample_rows(N, 300);
  const auto expect = int_sums(xc, wc, rows, K, M);
  std::vector<double> actual(got.begin(), got.end());
  EXPECT_TRUE(sums_equal(expect, actual, rows, M, "int8 worst case"));
  EXPECT_EQ(std::llabs(expect[0]), 127LL * 127 * K);
}

// FP8 sums through the route's kernel family (fp32 out, outer-vector scales of 1): exact integer
// sums or the route is unusable. Sums stay below 2^24 (225 * 11008 < 2^22), so fp32 holds them.
void check_fp8_sums(const std::vector<int8_t>& xc, const std::vector<int8_t>& wc, int64_t N,
                    int64_t K, int64_t M, const std::string& what) {
  LowbitGemm gemm;
  const auto dx = upload(to_e4m3(xc));
  const auto dw = upload(to_e4m3(wc));
  const auto ones_n = upload(std::vector<float>(static_cast<size_t>(N), 1.0f));
  const auto ones_m = upload(std::vector<float>(static_cast<size_t>(M), 1.0f));
  DeviceBuffer<float> acc(static_cast<size_t>(N * M));
  acc.fill_nan();
  gemm.fp8_sums(acc.get(), dx.get(), ones_n.get(), dw.get(), ones_m.get(), N, K, M, nullptr);
  const auto got = download(acc);
  const auto rows = sample_rows(N);
  const auto expect = int_sums(xc, wc, rows, K, M);
  std::vector<double> actual(expect.size());
  for (size_t i = 0; i < rows.size(); ++i)
    for (int64_t m = 0; m < M; ++m) actual[i * static_cast<size_t>(M) + static_cast<size_t>(m)] = got[static_cast<size_t>(rows[i] * M + m)];
  EXPECT_TRUE(sums_equal(expect, actual, rows, M, what));
}

TEST(CudaLowbitGemm, Fp8SumsExactRandom) {
  QUEST_REQUIRE_CUDA();
  Rng rng(9);
  const Shape shapes[] = {{512, 640, 1920}, {1024, 1792, 1792}, {2048, 4096, 640}};
  for (int bits = 1; bits <= cuda::kLowbitMaxBitsFp8; ++bits)
    for (const Shape& s : shapes) {
      const auto xc = random_codes(rng, static_cast<size_t>(s.N * s.K), bits);
      const auto wc = random_codes(rng, static_cast<size_t>(s.M * s.K), bits);
      check_fp8_sums(xc, wc, s.N, s.K, s.M,
                     "fp8 " + std::to_string(bits) + "-bit N=" + std::to_string(s.N) +
                         " K=" + std::to_string(s.K) + " M=" + std::to_string(s.M));
    }
}

// Worst cases of b-bit codes (top = 2^b - 1) over K = 11008, for every b the FP8 route takes.
class CudaLowbitFp8WorstCase : public ::testing::TestWithParam<int> {};

TEST_P(CudaLowbitFp8WorstCase, SumsExact) {
  QUEST_REQUIRE_CUDA();
  const int bits = GetParam();
  if (!cuda::lowbit_supported(LowbitRoute::kFp8, bits)) GTEST_SKIP() << "no FP8 route for " << bits;
  const int8_t top = int8_t((1 << bits) - 1);
  const int64_t N = 256, K = 11008, M = 640;
  Rng rng(13 + bits);
  const std::string b = std::to_string(bits) + "-bit";
  // (a) all +top: every partial sum as large as it can be (top^2 K at the end).
  std::vector<int8_t> xc(static_cast<size_t>(N * K), top), wc(static_cast<size_t>(M * K), top);
  check_fp8_sums(xc, wc, N, K, M, "fp8 " + b + " worst case all +top");
  // (b) random signs of top, mostly +: large partial sums of both signs, odd residues.
  for (auto& v : xc) v = rng.below(2) ? top : int8_t(-top);
  for (auto& v : wc) v = rng.below(8) ? top : int8_t(-top);
  check_fp8_sums(xc, wc, N, K, M, "fp8 " + b + " worst case +-top");
  // (c) a top among ones: small products next to large partial sums.
  for (auto& v : xc) v = rng.below(16) == 0 ? top : 1;
  for (auto& v : wc) v = rng.below(16) == 0 ? int8_t(-top) : 1;
  check_fp8_sums(xc, wc, N, K, M, "fp8 " + b + " mixed 1 and top");
}

INSTANTIATE_TEST_SUITE_P(Bits, CudaLowbitFp8WorstCase, ::testing::Values(1, 2, 3, 4));

// ---- the whole forward at model shapes ------------------------------------------------------
struct ForwardCase {
  int bits;
  LowbitRoute route;
  Shape shape;
};
void PrintTo(const ForwardCase& c, std::ostream* os) {
  *os << c.bits << "-bit " << (c.route == LowbitRoute::kFp8 ? "fp8" : "int8") << " N=" << c.shape.N
      << " K=" << c.shape.K << " M=" << c.shape.M;
}

class CudaLowbitForward : public ::testing::TestWithParam<ForwardCase> {};

TEST_P(CudaLowbitForward, MatchesDequantizedProduct) {
  QUEST_REQUIRE_CUDA();
  const ForwardCase& fc = GetParam();
  const auto [N, K, M] = fc.shape;
  const QuantSpec spec = QuantSpec::parse("hadamard-trust:" + std::to_string(fc.bits));
  const LowbitQuant q = LowbitQuant::from_spec(spec);
  Rng rng(uint64_t(100 + fc.bits));
  const auto x_h = cuda_test::randn(rng, static_cast<size_t>(N * K), 1.0, true);
  const auto w_h = cuda_test::randn(rng, static_cast<size_t>(M * K), 0.02);
  const auto x = upload_bf16(x_h);
  const auto w = upload(w_h);

  // Low-bit path.
  DeviceBuffer<uint8_t> xc(static_cast<size_t>(N * K)), wc(static_cast<size_t>(M * K));
  DeviceBuffer<float> sx(static_cast<size_t>(N)), sw(static_cast<size_t>(M));
  DeviceBuffer<bf16> y(static_cast<size_t>(N * M));
  y.fill_nan();
  cuda::lowbit_quantize(w.get(), wc.get(), sw.get(), nullptr, M, K, q, fc.route, nullptr);
  cuda::lowbit_quantize(x.get(), xc.get(), sx.get(), nullptr, N, K, q, fc.route, nullptr);
  LowbitGemm gemm;
  gemm.forward(y.get(), xc.get(), sx.get(), wc.get(), sw.get(), N, K, M, fc.route, nullptr);
  const auto got = download_bf16(y);

  // Reference: DeviceQuantizer's dequantized operands (Half form), product in double.
  DeviceQuantizer qx(spec, QuantRole::Input, N, K), qw(spec, QuantRole::Weight, M, K);
  DeviceBuffer<float> xq(static_cast<size_t>(N * K)), wq(static_cast<size_t>(M * K));
  qx.forward(x.get(), xq.get(), N, QuantForm::Half, nullptr);
  qw.forward(w.get(), wq.get(), M, QuantForm::Half, nullptr);
  const auto xq_h = download(xq);
  const auto wq_h = download(wq);
  const auto rows = sample_rows(N, 48);
  int64_t bad = 0;
  double worst = 0.0;
  std::ostringstream first;
  for (const int64_t n : rows)
    for (int64_t m = 0; m < M; ++m) {
      double s = 0.0, sa = 0.0;
      const float* a = xq_h.data() + n * K;
      const float* b = wq_h.data() + m * K;
      for (int64_t k = 0; k < K; ++k) {
        const double p = double(a[k]) * double(b[k]);
        s += p;
        sa += std::fabs(p);
      }
      // bf16 rounding of the output + fp32 rounding of the dequantized values and the scales.
      const double tol = cuda_test::kBf16Rtol * std::fabs(s) + 16.0 * 0x1p-24 * sa;
      const double v = got[static_cast<size_t>(n * M + m)];
      const double err = std::fabs(v - s);
      if (!(err <= tol)) {
        if (bad++ == 0)
          first << "row " << n << " col " << m << ": got " << v << ", expected " << s
                << " (tolerance " << tol << ")";
      }
      if (tol > 0) worst = std::max(worst, err / tol);
    }
  EXPECT_EQ(bad, 0) << "first: " << first.str();
  RecordProperty("worst_err_over_tol", std::to_string(worst));
}

std::vector<ForwardCase> forward_cases() {
  const Shape shapes[] = {{512, 640, 1920}, {1024, 1280, 1792}, {2048, 1792, 640},
                          {4096, 4096, 1920}};
  std::vector<ForwardCase> v;
  for (int b = 1; b <= 7; ++b) {
    v.push_back({b, LowbitRoute::kInt8, shapes[b % 4]});
    if (cuda::lowbit_supported(LowbitRoute::kFp8, b))
      v.push_back({b, LowbitRoute::kFp8, shapes[(b + 1) % 4]});
  }
  return v;
}

INSTANTIATE_TEST_SUITE_P(Routes, CudaLowbitForward, ::testing::ValuesIn(forward_cases()),
                         [](const ::testing::TestParamInfo<ForwardCase>& info) {
                           const auto& c = info.param;
                           return std::string(c.route == LowbitRoute::kFp8 ? "fp8_" : "int8_") +
                                  std::to_string(c.bits) + "bit_N" + std::to_string(c.shape.N) +
                                  "_K" + std::to_string(c.shape.K) + "_M" +
                                  std::to_string(c.shape.M);
                         });

// The int8 route in row chunks (a small scratch) gives the same bits as in one piece.
TEST(CudaLowbitGemm, Int8ChunksGiveTheSameBits) {
  QUEST_REQUIRE_CUDA();
  const int64_t N = 1000, K = 1280, M = 1792;
  Rng rng(21);
  const auto xc = upload(random_codes(rng, static_cast<size_t>(N * K), 4));
  const auto wc = upload(random_codes(rng, static_cast<size_t>(M * K), 4));
  std::vector<float> sx_h(static_cast<size_t>(N)), sw_h(static_cast<size_t>(M));
  for (auto& v : sx_h) v = float(0.01 + rng.uniform());
  for (auto& v : sw_h) v = float(0.001 + 0.01 * rng.uniform());
  const auto sx = upload(sx_h);
  const auto sw = upload(sw_h);
  DeviceBuffer<bf16> y1(static_cast<size_t>(N * M)), y2(static_cast<size_t>(N * M));
  LowbitGemm whole(static_cast<size_t>(N * M) * 4), chunked(static_cast<size_t>(100 * M) * 4);  // 96-row chunks
  whole.forward(y1.get(), xc.get(), sx.get(), wc.get(), sw.get(), N, K, M, LowbitRoute::kInt8,
                nullptr);
  chunked.forward(y2.get(), xc.get(), sx.get(), wc.get(), sw.get(), N, K, M, LowbitRoute::kInt8,
                  nullptr);
  EXPECT_TRUE(cuda_test::bit_equal(download_bf16(y2), download_bf16(y1), "chunked vs whole"));
}

}  // namespace
}  // namespace quest
