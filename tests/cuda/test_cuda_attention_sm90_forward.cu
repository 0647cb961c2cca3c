// The Hopper attention forward (attention_forward_sm90.cu, wgmma + TMA) against the CPU op and
// against the mma.sync kernel (attention_forward_mma), called directly so that both paths run on
// an H100 whatever cuda::attention_forward dispatches to; plus determinism (same bits on repeated
// calls) and the dispatch itself. Skipped where the sm90 kernel is not available.
//
// Tolerances as in test_cuda_attention.cu (u = 2^-8): against the CPU, per element
//   |out - ref| <= 2 u (sum_s p_ts |v_sd| + |ref|) + 1e-6, lse to 5e-5 (1 + |lse|), and the
// relative RMS error to 1/64. Between the two GPU kernels (each within u (sum p |v| + |out|) of
// the exact result, and sum p |v| <= max_s |v_sd|): |a - b| <= 4 u (max_s |v_sd| + |b|) + 1e-6,
// lse to 1e-4 (1 + |lse|), relative RMS 1/64.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "core/rng.h"
#include "cuda/cuda_test_util.h"
#include "ops/cpu_ops.h"
#include "ops/cuda/attention_forward_sm90.h"
#include "ops/cuda_ops.h"

namespace quest {
namespace {

using cuda_test::DeviceBuffer;
using bf16 = __nv_bfloat16;
constexpr double kU = cuda_test::kBf16Rtol;
constexpr int64_t kHD = 128;

struct Shape {
  int64_t B, T, H;
  double qk_scale;
};

std::string shape_str(const Shape& s) {
  std::ostringstream o;
  o << "B=" << s.B << " T=" << s.T << " n_head=" << s.H << " qk_scale=" << s.qk_scale;
  return o.str();
}

// Random bf16-rounded qkv (q, k parts times qk_scale).
std::vector<float> make_qkv(const Shape& s, uint64_t seed) {
  const int64_t C = s.H * kHD;
  Rng rng(seed);
  auto qkv = cuda_test::randn(rng, size_t(s.B * s.T * 3 * C));
  for (int64_t r = 0; r < s.B * s.T; ++r)
    for (int64_t j = 0; j < 2 * C; ++j) qkv[size_t(r * 3 * C + j)] *= float(s.qk_scale);
  return cuda_test::round_bf16(std::move(qkv));
}

struct Result {
  std::vector<float> out, lse;
};

enum class Path { kSm90, kMma, kSm90NoPingPong, kSm90NoL2Hints };

Result run_gpu(Path path, const Shape& s, const DeviceBuffer<bf16>& qkv) {
  const int64_t C = s.H * kHD;
  DeviceBuffer<bf16> out(size_t(s.B * s.T * C));
  DeviceBuffer<float> lse(size_t(s.B * s.H * s.T));
  out.fill_nan();  // every element must be written
  lse.fill_nan();
  if (path == Path::kSm90)
    cuda::attn::attention_forward_sm90(out, lse, qkv, s.B, s.T, s.H, kHD, nullptr);
  else if (path == Path::kSm90NoPingPong)
    cuda::attn::attention_forward_sm90(out, lse, qkv, s.B, s.T, s.H, kHD, nullptr,
                                       cuda::attn::Sm90Variant::kNoPingPong);
  else if (path == Path::kSm90NoL2Hints)
    cuda::attn::attention_forward_sm90(out, lse, qkv, s.B, s.T, s.H, kHD, nullptr,
                                       cuda::attn::Sm90Variant::kNoL2Hints);
  else
    cuda::attn::attention_forward_mma(out, lse, qkv, s.B, s.T, s.H, kHD, nullptr);
  cuda_test::sync();
  return {cuda_test::download_bf16(out), cuda_test::download(lse)};
}

// Counts elements with |a - e| > tol (NaN counts), reporting the worst.
::testing::AssertionResult within(const std::vector<float>& a, const std::vector<double>& e,
                                  const std::vector<double>& tol, const std::string& what) {
  size_t bad = 0, worst = 0;
  double worst_ratio = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double err = std::fabs(double(a[i]) - e[i]);
    if (!(err <= tol[i])) {
      ++bad;
      const double ratio = std::isnan(err) ? INFINITY : err / tol[i];
      if (!(ratio <= worst_ratio)) worst_ratio = ratio, worst = i;
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << what << ": " << bad << " of " << a.size()
                                       << " out of tolerance; worst index " << worst << ": "
                                       << a[worst] << " vs " << e[worst] << " tol " << tol[worst];
}

::testing::AssertionResult rms_close(const std::vector<float>& a, const std::vector<double>& e,
                                     double rel, const std::string& what) {
  double e2 = 0.0, r2 = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = double(a[i]) - e[i];
    e2 += d * d;
    r2 += e[i] * e[i];
  }
  if (std::sqrt(e2) <= rel * std::sqrt(r2) + 1e-6 * std::sqrt(double(a.size())))
    return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << what << ": relative RMS error "
                                       << std::sqrt(e2) / std::sqrt(r2) << " > " << rel;
}

std::vector<double> to_double(const std::vector<float>& v) { return {v.begin(), v.end()}; }

#define REQUIRE_SM90()                                                          \
  do {                                                                          \
    QUEST_REQUIRE_CUDA();                                                       \
    if (!cuda::attn::attention_forward_sm90_available())                        \
      GTEST_SKIP() << "the sm90 attention forward is not available on this GPU"; \
  } while (0)

// Against the CPU op: T = 1, T below / across / not a multiple of the 128-query tiles, a peaky
// softmax, and more tiles (4 x 12 x 3 = 144) than an H100 has SMs (the persistent loop and the
// buffer phases wrap).
TEST(CudaAttentionSm90Forward, MatchesCpu) {
  REQUIRE_SM90();
  const std::vector<Shape> shapes = {{1, 1, 3, 1.0},   {2, 77, 3, 1.0},  {2, 200, 2, 1.0},
                                     {1, 512, 5, 1.0}, {2, 512, 2, 2.0}, {1, 129, 2, 1.5},
                                     {4, 300, 12, 1.0}};
  for (const Shape& s : shapes) {
    SCOPED_TRACE(shape_str(s));
    const int64_t B = s.B, T = s.T, H = s.H, C = H * kHD, ld = 3 * C;
    const auto qkv = make_qkv(s, 4000 + uint64_t(T) * 3 + uint64_t(H));
    const auto dq = cuda_test::upload_bf16(qkv);
    const Result r = run_gpu(Path::kSm90, s, dq);

    std::vector<float> ref(size_t(B * T * C)), probs(size_t(B * H * T * T));
    cpu::attention_forward(ref.data(), probs.data(), qkv.data(), B, T, H, kHD);
    const double scale = 1.0 / std::sqrt(double(kHD));
    std::vector<double> tol(ref.size()), lse_ref(size_t(B * H * T)), lse_tol(lse_ref.size());
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t t = 0; t < T; ++t) {
          const float* p = probs.data() + ((b * H + h) * T + t) * T;
          const int64_t sm = std::max_element(p, p + t + 1) - p;
          const float* q = qkv.data() + (b * T + t) * ld + h * kHD;
          const float* k = qkv.data() + (b * T + sm) * ld + C + h * kHD;
          double score = 0.0;
          for (int64_t d = 0; d < kHD; ++d) score += double(q[d]) * double(k[d]);
          const size_t li = size_t((b * H + h) * T + t);
          lse_ref[li] = score * scale - std::log(double(p[sm]));
          lse_tol[li] = 5e-5 * (1 + std::fabs(lse_ref[li]));
          for (int64_t d = 0; d < kHD; ++d) {
            double pv = 0.0;
            for (int64_t j = 0; j <= t; ++j)
              pv += double(p[j]) * std::fabs(double(qkv[size_t((b * T + j) * ld + 2 * C + h * kHD + d)]));
            const size_t oi = size_t((b * T + t) * C + h * kHD + d);
            tol[oi] = 2 * kU * (pv + std::fabs(double(ref[oi]))) + 1e-6;
          }
        }
    EXPECT_TRUE(within(r.out, to_double(ref), tol, "out"));
    EXPECT_TRUE(rms_close(r.out, to_double(ref), 1.0 / 64, "out"));
    EXPECT_TRUE(within(r.lse, lse_ref, lse_tol, "lse"));
  }
}

// Against the mma.sync kernel, up to the 200M training shape (64 x 512, 10 heads: 2560 tiles).
TEST(CudaAttentionSm90Forward, MatchesMmaKernel) {
  REQUIRE_SM90();
  const std::vector<Shape> shapes = {{3, 77, 4, 1.0},   {8, 512, 10, 1.0}, {5, 1000, 3, 1.5},
                                     {64, 512, 10, 1.0}, {7, 200, 5, 2.0}};
  for (const Shape& s : shapes) {
    SCOPED_TRACE(shape_str(s));
    const int64_t B = s.B, T = s.T, H = s.H, C = H * kHD, ld = 3 * C;
    const auto qkv = make_qkv(s, 5000 + uint64_t(T) + uint64_t(B));
    const auto dq = cuda_test::upload_bf16(qkv);
    const Result a = run_gpu(Path::kSm90, s, dq);
    const Result e = run_gpu(Path::kMma, s, dq);
    // max over keys s <= t of |v[s, d]| (running max along t).
    std::vector<double> tol(e.out.size()), lse_tol(e.lse.size());
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t d = 0; d < kHD; ++d) {
          double vmax = 0.0;
          for (int64_t t = 0; t < T; ++t) {
            vmax = std::max(vmax, std::fabs(double(qkv[size_t((b * T + t) * ld + 2 * C + h * kHD + d)])));
            const size_t oi = size_t((b * T + t) * C + h * kHD + d);
            tol[oi] = 4 * kU * (vmax + std::fabs(double(e.out[oi]))) + 1e-6;
          }
        }
    for (size_t i = 0; i < lse_tol.size(); ++i) lse_tol[i] = 1e-4 * (1 + std::fabs(double(e.lse[i])));
    EXPECT_TRUE(within(a.out, to_double(e.out), tol, "out vs mma"));
    EXPECT_TRUE(rms_close(a.out, to_double(e.out), 1.0 / 64, "out vs mma"));
    EXPECT_TRUE(within(a.lse, to_double(e.lse), lse_tol, "lse vs mma"));
  }
}

// Same bits on repeated calls and from both kernel variants, and batch elements independent
// (B = 3 at once == three B = 1).
TEST(CudaAttentionSm90Forward, DeterministicAndBatchSplitting) {
  REQUIRE_SM90();
  const Shape s{3, 333, 7, 1.0};
  const int64_t C = s.H * kHD, n_qkv = s.T * 3 * C, n_out = s.T * C, n_lse = s.H * s.T;
  const auto dq = cuda_test::upload_bf16(make_qkv(s, 99));
  const Result r1 = run_gpu(Path::kSm90, s, dq);
  const Result r2 = run_gpu(Path::kSm90, s, dq);
  EXPECT_TRUE(cuda_test::bit_equal(r2.out, r1.out, "out, rerun"));
  EXPECT_TRUE(cuda_test::bit_equal(r2.lse, r1.lse, "lse, rerun"));
  // The other variants compute the same bits.
  const Result r3 = run_gpu(Path::kSm90NoPingPong, s, dq);
  EXPECT_TRUE(cuda_test::bit_equal(r3.out, r1.out, "out, no ping-pong"));
  EXPECT_TRUE(cuda_test::bit_equal(r3.lse, r1.lse, "lse, no ping-pong"));
  const Result r4 = run_gpu(Path::kSm90NoL2Hints, s, dq);
  EXPECT_TRUE(cuda_test::bit_equal(r4.out, r1.out, "out, no L2 hints"));
  EXPECT_TRUE(cuda_test::bit_equal(r4.lse, r1.lse, "lse, no L2 hints"));
  DeviceBuffer<bf16> out(size_t(s.B * n_out));
  DeviceBuffer<float> lse(size_t(s.B * n_lse));
  out.fill_nan();
  lse.fill_nan();
  for (int64_t b = 0; b < s.B; ++b)
    cuda::attn::attention_forward_sm90(out.get() + b * n_out, lse.get() + b * n_lse,
                                       dq.get() + b * n_qkv, 1, s.T, s.H, kHD, nullptr);
  cuda_test::sync();
  EXPECT_TRUE(cuda_test::bit_equal(cuda_test::download_bf16(out), r1.out, "out, split vs whole"));
  EXPECT_TRUE(cuda_test::bit_equal(cuda_test::download(lse), r1.lse, "lse, split vs whole"));
}

// cuda::attention_forward takes the sm90 kernel for head_dim 128 (unless QUEST_ATTN_SM90=0):
// the same bits as calling it directly.
TEST(CudaAttentionSm90Forward, DispatchUsesIt) {
  REQUIRE_SM90();
  const Shape s{2, 150, 3, 1.0};
  const int64_t C = s.H * kHD;
  const auto dq = cuda_test::upload_bf16(make_qkv(s, 7));
  const Result direct =
      run_gpu(cuda::attn::attention_forward_sm90_enabled() ? Path::kSm90 : Path::kMma, s, dq);
  DeviceBuffer<bf16> out(size_t(s.B * s.T * C));
  DeviceBuffer<float> lse(size_t(s.B * s.H * s.T));
  out.fill_nan();
  lse.fill_nan();
  cuda::attention_forward(out, lse, dq, s.B, s.T, s.H, kHD, nullptr);
  cuda_test::sync();
  EXPECT_TRUE(cuda_test::bit_equal(cuda_test::download_bf16(out), direct.out, "out"));
  EXPECT_TRUE(cuda_test::bit_equal(cuda_test::download(lse), direct.lse, "lse"));
}

}  // namespace
}  // namespace quest
