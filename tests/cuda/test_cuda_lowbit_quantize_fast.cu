// lowbit_quantize_fast (src/quant/cuda/lowbit_quantize_fast.cu), the forward-only activation
// quantizer, against two references on the same bf16 input:
// - a double-precision host quantizer (transform, row RMS, grid, level rint(x / step + 1/2) in
//   double; the step as grid_from_rms rounds it): every code equals it except where the entry is
//   within 1e-5 of a grid boundary (in units of the step), and then by one level;
// - lowbit_quantize (the training quantizer's bits, tested bitwise against DeviceQuantizer in
//   test_cuda_lowbit_gemm.cu): steps within 2^-20 relative, codes equal except at most 1 in 10^4
//   entries, each by one level (+-2 in the odd code) and near a boundary.
// Rows of very different scales with outliers (the grid clips), and edge rows: all zero, constant,
// one spike, an inf and a NaN entry (those take the exact per-entry path: the steps bitwise
// lowbit_quantize's, the codes bitwise its row-team kernel's).
// Shapes cover one to 32 warps a row and rows whose last warp is partly idle (cols % 1024 != 0).
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "cuda/cuda_test_util.h"
#include "quant/alpha.h"
#include "quant/cuda/lowbit_gemm.h"
#include "quant/quant_spec.h"

namespace quest {
namespace {

using cuda::bf16;
using cuda::LowbitQuant;
using cuda::LowbitRoute;
using cuda_test::DeviceBuffer;
using cuda_test::download;
using cuda_test::upload;
using cuda_test::upload_bf16;

constexpr int kZeroRow = 0, kConstRow = 1, kSpikeRow = 2, kInfRow = 3, kNanRow = 4;

// bf16-representable rows (the device gets the same values).
std::vector<float> make_rows(int64_t rows, int64_t cols, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> x(static_cast<size_t>(rows * cols), 0.0f);
  for (int64_t r = 0; r < rows; ++r) {
    float* xr = x.data() + r * cols;
    const double scale = std::exp(rng.uniform() * 8.0 - 4.0);
    for (int64_t i = 0; i < cols; ++i) {
      double v = rng.normal() * scale;
      if (rng.uniform() < 0.01) v *= 12.0;
      xr[i] = cuda_test::round_bf16(float(v));
    }
    if (r == kZeroRow) std::fill_n(xr, cols, 0.0f);
    if (r == kConstRow) std::fill_n(xr, cols, 0.75f);
    if (r == kSpikeRow) std::fill_n(xr, cols, 0.0f), xr[cols / 3] = -3.0f;
    if (r == kInfRow) xr[cols / 2] = std::numeric_limits<float>::infinity();
    if (r == kNanRow) xr[5] = std::numeric_limits<float>::quiet_NaN();
  }
  return x;
}

// The method in double: per 128-block FWHT / sqrt(128), rms over the row, the clip scale and step
// rounded to float as grid_from_rms does, t = x / step; level q = clamp(rint(t + 1/2)).
struct HostRow {
  float step;
  std::vector<double> t;  // x / step of each entry, unclamped
};
HostRow host_quantize(const float* x, int64_t cols, int bits) {
  std::vector<double> v(x, x + cols);
  for (int64_t b = 0; b < cols; b += 128)
    for (int h = 1; h < 128; h <<= 1)
      for (int64_t j = b; j < b + 128; ++j)
        if (((j - b) & h) == 0) {
          const double a = v[size_t(j)], c = v[size_t(j + h)];
          v[size_t(j)] = a + c, v[size_t(j + h)] = a - c;
        }
  double ss = 0.0;
  for (auto& e : v) e /= std::sqrt(128.0), ss += e * e;
  const float scale = float(kAlpha[bits] * std::sqrt(ss / double(cols)) + 1e-8);
  HostRow hr;
  hr.step = float(2.0 * double(scale) / double((1 << bits) - 1));
  for (auto& e : v) e /= double(hr.step);
  hr.t = std::move(v);
  return hr;
}
int host_code(double t, int bits) {
  const double half = double(1 << (bits - 1));
  const double q = std::clamp(std::nearbyint(t + 0.5), 1.0 - half, half);
  return int(2.0 * q - 1.0);
}
// Within tol of a boundary between two levels (the boundaries are the integers, in step units).
bool near_boundary(double t, double tol) { return std::fabs(t - std::nearbyint(t)) <= tol; }

struct FastCase {
  int64_t rows, cols;
  int bits;
};
void PrintTo(const FastCase& c, std::ostream* os) {
  *os << c.rows << "x" << c.cols << " " << c.bits << "-bit";
}

class CudaLowbitQuantizeFast : public ::testing::TestWithParam<FastCase> {};

TEST_P(CudaLowbitQuantizeFast, MatchesTheMethodAndTheExactQuantizer) {
  QUEST_REQUIRE_CUDA();
  const FastCase& fc = GetParam();
  const int64_t rows = fc.rows, cols = fc.cols;
  const int bits = fc.bits, top = (1 << bits) - 1;
  const std::vector<float> xin = make_rows(rows, cols, 7 * cols + bits);
  const auto x = upload_bf16(xin);
  const LowbitQuant q =
      LowbitQuant::from_spec(QuantSpec::parse("hadamard-trust:" + std::to_string(bits)));

  DeviceBuffer<int8_t> fast_codes(static_cast<size_t>(rows * cols)), ref_codes(fast_codes.size());
  DeviceBuffer<float> fast_step(static_cast<size_t>(rows)), ref_step(fast_step.size());
  fast_codes.fill_nan(), fast_step.fill_nan();
  cuda::lowbit_quantize_fast(x.get(), fast_codes.get(), fast_step.get(), rows, cols, q, nullptr);
  // The row-team kernel where it runs (rows of at most 16384): on non-finite rows, whose codes
  // mean nothing, it and the staged kernel differ, and this kernel follows the row teams.
  const bool teams = cols <= 16384;
  cuda::lowbit_quantize(x.get(), ref_codes.get(), ref_step.get(), nullptr, rows, cols, q,
                        LowbitRoute::kInt8, nullptr,
                        teams ? cuda::LowbitQuantKernel::kRowTeams : cuda::LowbitQuantKernel::kAuto);
  cuda_test::sync();
  const auto fc8 = download(fast_codes), rc8 = download(ref_codes);
  const auto fs = download(fast_step), rs = download(ref_step);

  int64_t host_bad = 0, ref_diff = 0, ref_bad = 0, checked = 0;
  std::ostringstream first;
  for (int64_t r = 0; r < rows; ++r) {
    const size_t r0 = static_cast<size_t>(r * cols);
    const bool nonfinite = r == kInfRow || r == kNanRow;
    if (nonfinite) {  // the exact path: bitwise lowbit_quantize
      EXPECT_EQ(std::bit_cast<uint32_t>(fs[size_t(r)]), std::bit_cast<uint32_t>(rs[size_t(r)]))
          << "row " << r << " step";
      for (int64_t k = 0; teams && k < cols; ++k)
        if (fc8[r0 + size_t(k)] != rc8[r0 + size_t(k)] && ref_bad++ == 0)
          first << "non-finite row " << r << " col " << k << ": " << int(fc8[r0 + size_t(k)])
                << " vs " << int(rc8[r0 + size_t(k)]) << "; ";
      continue;
    }
    const double srel = std::fabs(double(fs[size_t(r)]) - double(rs[size_t(r)])) / double(rs[size_t(r)]);
    EXPECT_LE(srel, 0x1p-20) << "row " << r << ": step " << fs[size_t(r)] << " vs exact "
                             << rs[size_t(r)];
    const HostRow hr = host_quantize(xin.data() + r0, cols, bits);
    EXPECT_LE(std::fabs(double(fs[size_t(r)]) - double(hr.step)) / double(hr.step), 0x1p-20)
        << "row " << r << ": step " << fs[size_t(r)] << " vs double " << hr.step;
    for (int64_t k = 0; k < cols; ++k) {
      const int got = fc8[r0 + size_t(k)], exact = rc8[r0 + size_t(k)];
      const double t = hr.t[size_t(k)];
      const int want = host_code(t, bits);
      const bool odd = (got & 1) != 0 && std::abs(got) <= top;
      const bool near = near_boundary(t, 1e-5);
      ++checked;
      if (!odd || (got != want && !(near && std::abs(got - want) == 2))) {
        if (host_bad++ == 0)
          first << "row " << r << " col " << k << ": code " << got << ", double reference "
                << want << " (x/step " << t << "); ";
      }
      if (got != exact) {
        ++ref_diff;
        if ((std::abs(got - exact) != 2 || !near) && ref_bad++ == 0)
          first << "row " << r << " col " << k << ": code " << got << ", lowbit_quantize "
                << exact << " (x/step " << t << "); ";
      }
    }
  }
  EXPECT_EQ(host_bad, 0) << first.str();
  EXPECT_EQ(ref_bad, 0) << first.str();
  EXPECT_LE(ref_diff * 10000, checked) << ref_diff << " of " << checked
                                       << " codes differ from lowbit_quantize";
}

std::vector<FastCase> fast_cases() {
  std::vector<FastCase> v;
  for (int b = 1; b <= 7; ++b) v.push_back({24, 4096, b});
  v.push_back({40, 11008, 4});   // 86 blocks: 11 warps, the last with 6 live lane groups
  v.push_back({40, 1280, 4});    // 10 blocks: 2 warps
  v.push_back({12, 128, 3});     // one block: one warp, 7 idle lane groups
  v.push_back({8, 32768, 4});    // 32 warps
  v.push_back({16, 14336, 7});
  return v;
}

INSTANTIATE_TEST_SUITE_P(Shapes, CudaLowbitQuantizeFast, ::testing::ValuesIn(fast_cases()),
                         [](const ::testing::TestParamInfo<FastCase>& info) {
                           return std::to_string(info.param.rows) + "x" +
                                  std::to_string(info.param.cols) + "_b" +
                                  std::to_string(info.param.bits);
                         });

TEST(CudaLowbitQuantizeFastErrors, RejectsWhatItCannotQuantize) {
  QUEST_REQUIRE_CUDA();
  DeviceBuffer<bf16> x(static_cast<size_t>(4 * 65536));
  DeviceBuffer<int8_t> c(x.size());
  DeviceBuffer<float> s(4);
  LowbitQuant q = LowbitQuant::from_spec(QuantSpec::parse("hadamard-trust:4"));
  EXPECT_THROW(cuda::lowbit_quantize_fast(x.get(), c.get(), s.get(), 4, 200, q, nullptr), Error);
  EXPECT_THROW(cuda::lowbit_quantize_fast(x.get(), c.get(), s.get(), 4, 65536, q, nullptr), Error);
  EXPECT_THROW(cuda::lowbit_quantize_fast(x.get() + 1, c.get(), s.get(), 4, 256, q, nullptr),
               Error);
  q.bits = 8;
  EXPECT_THROW(cuda::lowbit_quantize_fast(x.get(), c.get(), s.get(), 4, 256, q, nullptr), Error);
  q = LowbitQuant::from_spec(QuantSpec::parse("trust:4"));
  EXPECT_THROW(cuda::lowbit_quantize_fast(x.get(), c.get(), s.get(), 4, 256, q, nullptr), Error);
  EXPECT_TRUE(cuda::lowbit_quantize_fast_supports(32768, LowbitQuant::from_spec(
                                                             QuantSpec::parse("hadamard-trust:7"))));
  EXPECT_FALSE(cuda::lowbit_quantize_fast_supports(32768 + 128, LowbitQuant::from_spec(
                                                                    QuantSpec::parse("hadamard-trust:7"))));
}

}  // namespace
}  // namespace quest
