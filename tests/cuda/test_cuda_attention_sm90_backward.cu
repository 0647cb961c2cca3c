// The Hopper (sm_90a, wgmma) attention backward (attention_backward_sm90.cu) against the mma.sync
// kernels (attention_backward_mma, themselves checked against the CPU op with per-element bounds
// in test_cuda_attention.cu) and against the CPU op (relative RMS), at head_dim 128 and
// T = 1, 64, 77, 129, 200, 512, 1100; plus determinism (repeated calls and batch splitting give
// identical bits) and the dispatch of attention_backward. Skipped where the device is not sm_90
// or the binary lacks sm_90a code.
//
// Every variant (attention_backward_sm90_config 1 .. 3) is checked; they give identical bits
// (checked), and on the H100 (2026-11-24) also the same bits as the mma.sync kernels (the same
// summation orders), which the tests do not require. Tolerances (u = 2^-8): both paths round P
// and dS to bf16 before the second products and the result to bf16; a different fp32 summation
// order may move a P or dS element to the neighbouring bf16 value. Per element: |sm90 - mma| <= 4 u (|sm90| + |mma|) + 8 u
// rms(part) (rms over the q, k or v part), and the relative RMS difference per part <= 1/128;
// against the fp32 CPU op the relative RMS error per part <= 1/64 (as test_cuda_attention.cu).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "core/rng.h"
#include "cuda/cuda_test_util.h"
#include "ops/cpu_ops.h"
#include "ops/cuda/attention_backward_sm90.h"
#include "ops/cuda_ops.h"

namespace quest {
namespace {

using cuda_test::DeviceBuffer;
using bf16 = __nv_bfloat16;
constexpr double kU = cuda_test::kBf16Rtol;
constexpr int64_t kHD = 128;

#define QUEST_REQUIRE_SM90()                                                                \
  do {                                                                                      \
    QUEST_REQUIRE_CUDA();                                                                   \
    if (!cuda::attention_backward_sm90_available())                                         \
      GTEST_SKIP() << "not an sm_90 device, or no sm_90a code in this binary";              \
  } while (0)

struct Case {
  int64_t B, T, H;
  double qk_scale;
};
std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  std::ostringstream s;
  s << "B" << info.param.B << "_T" << info.param.T << "_H" << info.param.H << "_qk"
    << int(info.param.qk_scale * 10);
  return s.str();
}

// Random qkv (q, k parts times qk_scale) and dout, rounded to bf16; the GPU forward's out, lse.
struct Problem {
  std::vector<float> qkv, dout;
  DeviceBuffer<bf16> d_qkv, d_dout, d_out;
  DeviceBuffer<float> d_lse;
};
Problem make_problem(const Case& c, uint64_t seed) {
  const int64_t C = c.H * kHD;
  Rng rng(seed);
  Problem p;
  p.qkv = cuda_test::randn(rng, size_t(c.B * c.T * 3 * C));
  for (int64_t r = 0; r < c.B * c.T; ++r)
    for (int64_t j = 0; j < 2 * C; ++j) p.qkv[size_t(r * 3 * C + j)] *= float(c.qk_scale);
  p.qkv = cuda_test::round_bf16(std::move(p.qkv));
  p.dout = cuda_test::randn(rng, size_t(c.B * c.T * C), 1.0, true);
  p.d_qkv = cuda_test::upload_bf16(p.qkv);
  p.d_dout = cuda_test::upload_bf16(p.dout);
  p.d_out = DeviceBuffer<bf16>(size_t(c.B * c.T * C));
  p.d_lse = DeviceBuffer<float>(size_t(c.B * c.H * c.T));
  cuda::attention_forward(p.d_out, p.d_lse, p.d_qkv, c.B, c.T, c.H, kHD, nullptr);
  cuda_test::sync();
  return p;
}

using Backward = void (*)(bf16*, const bf16*, const bf16*, const bf16*, const float*, int64_t,
                          int64_t, int64_t, int64_t, float*, cudaStream_t);
// dqkv (NaN-poisoned first, so unwritten elements show) of one backward implementation.
std::vector<float> run_backward(Backward f, const Case& c, const Problem& p) {
  DeviceBuffer<bf16> dqkv(size_t(c.B * c.T * 3 * c.H * kHD));
  dqkv.fill_nan();
  DeviceBuffer<float> scratch(size_t(cuda::attention_backward_scratch(c.B, c.T, c.H, kHD)));
  f(dqkv, p.d_dout, p.d_out, p.d_qkv, p.d_lse, c.B, c.T, c.H, kHD, scratch, nullptr);
  cuda_test::sync();
  return cuda_test::download_bf16(dqkv);
}
std::vector<float> run_variant(int variant, const Case& c, const Problem& p) {
  DeviceBuffer<bf16> dqkv(size_t(c.B * c.T * 3 * c.H * kHD));
  dqkv.fill_nan();
  DeviceBuffer<float> scratch(size_t(cuda::attention_backward_scratch(c.B, c.T, c.H, kHD)));
  cuda::attention_backward_sm90_config(dqkv, p.d_dout, p.d_out, p.d_qkv, p.d_lse, c.B, c.T, c.H,
                                       kHD, scratch, nullptr, variant, 3);
  cuda_test::sync();
  return cuda_test::download_bf16(dqkv);
}
constexpr int kVariants = 3;

// Part `part` (0 q, 1 k, 2 v) of a [B, T, 3C] tensor.
std::vector<double> part_of(const std::vector<float>& x, const Case& c, int part) {
  const int64_t C = c.H * kHD;
  std::vector<double> r;
  r.reserve(size_t(c.B * c.T * C));
  for (int64_t row = 0; row < c.B * c.T; ++row)
    for (int64_t j = part * C; j < (part + 1) * C; ++j) r.push_back(x[size_t(row * 3 * C + j)]);
  return r;
}
double rms(const std::vector<double>& x) {
  double s = 0;
  for (double v : x) s += v * v;
  return std::sqrt(s / double(std::max<size_t>(1, x.size())));
}
double rel_rms_diff(const std::vector<double>& a, const std::vector<double>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) num += (a[i] - ref[i]) * (a[i] - ref[i]), den += ref[i] * ref[i];
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

class CudaAttentionSm90Backward : public ::testing::TestWithParam<Case> {};

TEST_P(CudaAttentionSm90Backward, MatchesMmaKernelsAndCpu) {
  QUEST_REQUIRE_SM90();
  const Case c = GetParam();
  const Problem p = make_problem(c, 5000 + uint64_t(c.T) * 13 + uint64_t(c.B));
  const auto ref = run_backward(cuda::attention_backward_mma, c, p);

  // The CPU op (fp32) on the same bf16 inputs.
  const int64_t C = c.H * kHD;
  std::vector<float> out(size_t(c.B * c.T * C)), probs(size_t(c.B * c.H * c.T * c.T));
  std::vector<float> cpu_dqkv(size_t(c.B * c.T * 3 * C));
  cpu::attention_forward(out.data(), probs.data(), p.qkv.data(), c.B, c.T, c.H, kHD);
  cpu::attention_backward(cpu_dqkv.data(), p.dout.data(), p.qkv.data(), probs.data(), c.B, c.T,
                          c.H, kHD);

  for (int variant = 1; variant <= kVariants; ++variant) {
    const auto got = run_variant(variant, c, p);
    for (int part = 0; part < 3; ++part) {
      const std::string name =
          std::string("d") + "qkv"[part] + " (variant " + std::to_string(variant) + ")";
      const auto a = part_of(got, c, part), b = part_of(ref, c, part);
      const auto e = part_of(cpu_dqkv, c, part);
      const double r = rms(b);
      size_t bad = 0, first = 0;
      double worst = 0;
      for (size_t i = 0; i < a.size(); ++i) {
        const double tol = 4 * kU * (std::fabs(a[i]) + std::fabs(b[i])) + 8 * kU * r;
        const double err = std::fabs(a[i] - b[i]);
        if (!(err <= tol)) {  // NaN fails
          if (bad++ == 0) first = i;
          worst = std::max(worst, std::isnan(err) ? INFINITY : err / tol);
        }
      }
      EXPECT_EQ(bad, 0u) << name << ": " << bad << " of " << a.size()
                         << " elements differ from the mma kernels beyond tolerance; first at "
                         << first << " (row " << first / C << ", col " << first % C << "): sm90 "
                         << a[first] << " mma " << b[first] << "; worst err/tol " << worst;
      EXPECT_LE(rel_rms_diff(a, b), 1.0 / 128) << name << " vs mma kernels";
      EXPECT_LE(rel_rms_diff(a, e), 1.0 / 64) << name << " vs the CPU op";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, CudaAttentionSm90Backward,
    ::testing::Values(Case{1, 1, 3, 1.0}, Case{2, 77, 3, 1.0}, Case{3, 200, 2, 1.0},
                      Case{2, 512, 5, 1.0}, Case{2, 512, 3, 2.0}, Case{3, 64, 1, 1.0},
                      Case{1, 129, 2, 1.5}, Case{1, 1100, 2, 1.0}, Case{4, 200, 3, 2.0}),
    case_name);

// Repeated calls give identical bits; B = 3 in one call equals three B = 1 calls on the slices.
TEST(CudaAttentionSm90BackwardConsistency, DeterministicAndBatchSplitting) {
  QUEST_REQUIRE_SM90();
  for (const int64_t T : {77, 200, 512}) {
    const Case c{3, T, 2, 1.0};
    const int64_t C = c.H * kHD, n_qkv = c.T * 3 * C, n_out = c.T * C, n_lse = c.H * c.T;
    const Problem p = make_problem(c, 91 + uint64_t(T));
    DeviceBuffer<bf16> d0(size_t(c.B * n_qkv)), d1(size_t(c.B * n_qkv)), d2(size_t(c.B * n_qkv));
    for (auto* buf : {&d0, &d1, &d2}) buf->fill_nan();
    DeviceBuffer<float> scratch(size_t(cuda::attention_backward_scratch(c.B, c.T, c.H, kHD)));
    cuda::attention_backward_sm90(d0, p.d_dout, p.d_out, p.d_qkv, p.d_lse, c.B, c.T, c.H, kHD,
                                  scratch, nullptr);
    cuda::attention_backward_sm90(d1, p.d_dout, p.d_out, p.d_qkv, p.d_lse, c.B, c.T, c.H, kHD,
                                  scratch, nullptr);
    for (int variant = 1; variant <= kVariants; ++variant) {  // every variant: reruns agree
      const auto x = run_variant(variant, c, p), y = run_variant(variant, c, p);
      EXPECT_TRUE(cuda_test::bit_equal(x, y, "dqkv, variant " + std::to_string(variant) +
                                                 " rerun (T " + std::to_string(T) + ")"));
    }
    for (int64_t b = 0; b < c.B; ++b)
      cuda::attention_backward_sm90(d2.get() + b * n_qkv, p.d_dout.get() + b * n_out,
                                    p.d_out.get() + b * n_out, p.d_qkv.get() + b * n_qkv,
                                    p.d_lse.get() + b * n_lse, 1, c.T, c.H, kHD, scratch, nullptr);
    cuda_test::sync();
    const auto a = cuda_test::download_bf16(d0);
    const std::string t = " (T " + std::to_string(T) + ")";
    EXPECT_TRUE(cuda_test::bit_equal(cuda_test::download_bf16(d1), a, "dqkv, rerun" + t));
    EXPECT_TRUE(cuda_test::bit_equal(cuda_test::download_bf16(d2), a, "dqkv, split vs whole" + t));
  }
}

// The variants give the same bits (the same summation orders).
TEST(CudaAttentionSm90BackwardConsistency, VariantsAgree) {
  QUEST_REQUIRE_SM90();
  for (const int64_t T : {1, 77, 200, 512}) {
    const Case c{2, T, 3, 1.5};
    const Problem p = make_problem(c, 777 + uint64_t(T));
    const auto v1 = run_variant(1, c, p);
    for (const int variant : {2, 3})
      EXPECT_TRUE(cuda_test::bit_equal(run_variant(variant, c, p), v1,
                                       "dqkv, variant " + std::to_string(variant) + " vs 1 (T " +
                                           std::to_string(T) + ")"));
  }
}

// attention_backward takes the sm90 path at head_dim 128 (unless QUEST_ATTN_SM90_BWD=0) and
// then gives its bits exactly; never at other head dims.
TEST(CudaAttentionSm90BackwardConsistency, Dispatch) {
  QUEST_REQUIRE_SM90();
  EXPECT_FALSE(cuda::attention_backward_uses_sm90(64));
  const char* env = std::getenv("QUEST_ATTN_SM90_BWD");
  const bool off = env && std::string(env) == "0";  // "1" .. "3": a variant
  EXPECT_EQ(cuda::attention_backward_uses_sm90(128), !off);
  const Case c{2, 200, 2, 1.0};
  const Problem p = make_problem(c, 4242);
  const auto a = run_backward(cuda::attention_backward, c, p);
  const auto b = run_backward(off ? cuda::attention_backward_mma : cuda::attention_backward_sm90, c, p);
  EXPECT_TRUE(cuda_test::bit_equal(a, b, "attention_backward vs the path it dispatches to"));
}

}  // namespace
}  // namespace quest
