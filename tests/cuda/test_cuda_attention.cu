// cuda::attention_forward / attention_backward (flash-style, bf16, fp32 softmax statistics)
// against the CPU op (cpu::attention_forward / attention_backward, fp32) on the same bf16-rounded
// inputs, plus batch-splitting consistency, determinism and argument errors.
//
// Tolerances (u = 2^-8, the unit roundoff of bf16). The GPU rounds to bf16 exactly where the CPU
// does not: P (or dS) before the second product, and the result. So, per element:
//   out[t, d]:   |err| <= u (sum_s p_ts |v_sd| + |out|)                (P rounding + output rounding)
//   dV[s, d]:    |err| <= u (sum_t p_ts |dO_td| + |dV|)
//   dQ[t, d]:    |err| <= u (scale sum_s (|dS_ts| + p_ts E_t) |k_sd| + |dQ|)
//   dK[s, d]:    |err| <= u (scale sum_t (|dS_ts| + p_ts E_t) |q_td| + |dK|)
// where E_t = sum_d |dO_td| (2 sum_s p_ts |v_sd| + |out_td|) bounds the error of D = dO . O that the
// GPU takes from its own bf16 output (|D_gpu - D| <= u E_t); fp32 arithmetic (~1e-6 relative, the
// lse's ~1e-5 included) stays far inside. The tests allow twice these bounds (+1e-6): they are
// worst cases that cannot fail by accident, and they flag any error the size of a bf16 rounding
// of the terms. Errors from a wrong mask or a missing tile can be smaller than that on long rows,
// so two tighter checks back them up: lse (pure fp32) to 5e-5 (1 + |lse|), and the relative RMS
// error of each output, expected about u / 2 here, to 1/64.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "cuda/cuda_test_util.h"
#include "ops/cpu_ops.h"
#include "ops/cuda_ops.h"

namespace quest {
namespace {

using cuda_test::DeviceBuffer;
using bf16 = __nv_bfloat16;
constexpr double kU = cuda_test::kBf16Rtol;

struct Case {
  int64_t B, T, H, HD;
  double qk_scale;  // q and k ~ N(0, qk_scale^2): scores ~ N(0, qk_scale^4); 2 -> peaky softmax
};

std::ostream& operator<<(std::ostream& os, const Case& c) {
  return os << "B=" << c.B << " T=" << c.T << " n_head=" << c.H << " head_dim=" << c.HD
            << " qk_scale=" << c.qk_scale;
}

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  const Case& c = info.param;
  std::ostringstream s;
  s << "B" << c.B << "_T" << c.T << "_H" << c.H << "_HD" << c.HD << "_qk" << int(c.qk_scale * 10);
  return s.str();
}

// qkv (q and k parts times qk_scale) and dout, already rounded to bf16.
struct Inputs {
  std::vector<float> qkv, dout;
};
Inputs make_inputs(const Case& c, uint64_t seed) {
  const int64_t C = c.H * c.HD;
  Rng rng(seed);
  Inputs in;
  in.qkv = cuda_test::randn(rng, size_t(c.B * c.T * 3 * C));
  for (int64_t r = 0; r < c.B * c.T; ++r)
    for (int64_t j = 0; j < 2 * C; ++j) in.qkv[r * 3 * C + j] *= float(c.qk_scale);
  in.qkv = cuda_test::round_bf16(std::move(in.qkv));
  in.dout = cuda_test::randn(rng, size_t(c.B * c.T * C), 1.0, true);
  return in;
}

// Names the element of a [B, T, parts * C] tensor ("q", "k", "v" or "out" parts).
std::function<std::string(size_t)> describer(const Case& c, int parts) {
  return [c, parts](size_t i) {
    const int64_t C = c.H * c.HD, row = int64_t(i) / (parts * C), col = int64_t(i) % (parts * C);
    const int64_t part = col / C, h = col % C / c.HD, d = col % c.HD;
    std::ostringstream s;
    s << (parts == 1 ? "out" : part == 0 ? "q" : part == 1 ? "k" : "v") << "[b=" << row / c.T
      << ", t=" << row % c.T << ", h=" << h << ", d=" << d << "]";
    return s.str();
  };
}

// |actual - expected| <= tol elementwise (NaN fails); names the worst element (by err / tol).
::testing::AssertionResult within(const std::vector<float>& actual,
                                  const std::vector<double>& expected,
                                  const std::vector<double>& tol, const std::string& what,
                                  const std::function<std::string(size_t)>& name) {
  size_t bad = 0, worst = 0;
  double worst_ratio = 0.0;
  for (size_t i = 0; i < actual.size(); ++i) {
    const double err = std::fabs(double(actual[i]) - expected[i]);
    if (!(err <= tol[i])) {
      ++bad;
      const double ratio = std::isnan(err) ? INFINITY : err / tol[i];
      if (!(ratio <= worst_ratio)) worst_ratio = ratio, worst = i;
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << what << ": " << bad << " of " << actual.size() << " elements out of tolerance; worst "
         << name(worst) << ": actual " << actual[worst] << " expected " << expected[worst]
         << " tolerance " << tol[worst] << " (" << worst_ratio << "x)";
}

// ||actual - expected|| <= rel ||expected|| + 1e-6 sqrt(n) (2-norms; the floor, fp32 noise, is
// for references that vanish: at T = 1, dq and dk are exactly 0).
::testing::AssertionResult rms_close(const std::vector<float>& actual,
                                     const std::vector<double>& expected, double rel,
                                     const std::string& what) {
  double e2 = 0.0, r2 = 0.0;
  for (size_t i = 0; i < actual.size(); ++i) {
    const double e = double(actual[i]) - expected[i];
    e2 += e * e;
    r2 += expected[i] * expected[i];
  }
  const double err = std::sqrt(e2), ref = std::sqrt(r2);
  if (err <= rel * ref + 1e-6 * std::sqrt(double(actual.size())))
    return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << what << ": relative RMS error " << err / ref << " > "
                                       << rel << " (error norm " << err << ", reference norm "
                                       << ref << ")";
}

// The CPU forward on the GPU's inputs, with lse and sum_s p |v| (the forward error bound).
struct ForwardRef {
  std::vector<float> out, probs;  // cpu::attention_forward
  std::vector<double> lse;        // [B, H, T]
  std::vector<double> pv_abs;     // [B, T, C]: sum_s p_ts |v_sd|
};
ForwardRef forward_ref(const Case& c, const std::vector<float>& qkv) {
  const int64_t B = c.B, T = c.T, H = c.H, HD = c.HD, C = H * HD, ld = 3 * C;
  const double scale = 1.0 / std::sqrt(double(HD));
  ForwardRef r;
  r.out.resize(size_t(B * T * C));
  r.probs.resize(size_t(B * H * T * T));
  cpu::attention_forward(r.out.data(), r.probs.data(), qkv.data(), B, T, H, HD);
  r.lse.resize(size_t(B * H * T));
  r.pv_abs.assign(size_t(B * T * C), 0.0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < T; ++t) {
        const float* p = r.probs.data() + ((b * H + h) * T + t) * T;
        const float* q = qkv.data() + (b * T + t) * ld + h * HD;
        // lse = score_s - log p_s at the most likely key (p >= 1/T there: log p is accurate).
        const int64_t s_max = std::max_element(p, p + t + 1) - p;
        const float* k = qkv.data() + (b * T + s_max) * ld + C + h * HD;
        double score = 0.0;
        for (int64_t d = 0; d < HD; ++d) score += double(q[d]) * double(k[d]);
        r.lse[size_t((b * H + h) * T + t)] = score * scale - std::log(double(p[s_max]));
        double* a = r.pv_abs.data() + (b * T + t) * C + h * HD;
        for (int64_t s = 0; s <= t; ++s) {
          const float* v = qkv.data() + (b * T + s) * ld + 2 * C + h * HD;
          for (int64_t d = 0; d < HD; ++d) a[d] += double(p[s]) * std::fabs(double(v[d]));
        }
      }
  return r;
}

// The CPU backward and the per-element bound sums of the header (dqkv layout).
struct BackwardRef {
  std::vector<float> dqkv;
  std::vector<double> bound;  // q, k parts: scale sum (|dS| + p E) |k| or |q|; v part: sum p |dO|
};
BackwardRef backward_ref(const Case& c, const std::vector<float>& qkv,
                         const std::vector<float>& dout, const ForwardRef& f) {
  const int64_t B = c.B, T = c.T, H = c.H, HD = c.HD, C = H * HD, ld = 3 * C;
  const double scale = 1.0 / std::sqrt(double(HD));
  BackwardRef r;
  r.dqkv.resize(size_t(B * T * ld));
  cpu::attention_backward(r.dqkv.data(), dout.data(), qkv.data(), f.probs.data(), B, T, H, HD);
  r.bound.assign(r.dqkv.size(), 0.0);
  std::vector<double> dp(static_cast<size_t>(T));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < T; ++t) {
        const float* p = f.probs.data() + ((b * H + h) * T + t) * T;
        const float* g = dout.data() + (b * T + t) * C + h * HD;
        const float* q = qkv.data() + (b * T + t) * ld + h * HD;
        const float* o = f.out.data() + (b * T + t) * C + h * HD;
        const double* pva = f.pv_abs.data() + (b * T + t) * C + h * HD;
        double E = 0.0, D = 0.0;
        for (int64_t d = 0; d < HD; ++d)
          E += std::fabs(double(g[d])) * (2 * pva[d] + std::fabs(double(o[d])));
        for (int64_t s = 0; s <= t; ++s) {
          const float* v = qkv.data() + (b * T + s) * ld + 2 * C + h * HD;
          double acc = 0.0;
          for (int64_t d = 0; d < HD; ++d) acc += double(g[d]) * double(v[d]);
          dp[size_t(s)] = acc;
          D += double(p[s]) * acc;
        }
        double* bq = r.bound.data() + (b * T + t) * ld + h * HD;
        for (int64_t s = 0; s <= t; ++s) {
          const double ps = p[s];
          if (ps == 0.0) continue;
          const double W = scale * (std::fabs(ps * (dp[size_t(s)] - D)) + ps * E);
          const float* k = qkv.data() + (b * T + s) * ld + C + h * HD;
          double* bk = r.bound.data() + (b * T + s) * ld + C + h * HD;
          double* bv = bk + C;
          for (int64_t d = 0; d < HD; ++d) {
            bq[d] += W * std::fabs(double(k[d]));
            bk[d] += W * std::fabs(double(q[d]));
            bv[d] += ps * std::fabs(double(g[d]));
          }
        }
      }
  return r;
}

std::vector<double> to_double(const std::vector<float>& v) { return {v.begin(), v.end()}; }

// 2 u (bound + |ref|) + 1e-6, elementwise.
std::vector<double> tolerance(const std::vector<double>& bound, const std::vector<float>& ref) {
  std::vector<double> tol(ref.size());
  for (size_t i = 0; i < ref.size(); ++i)
    tol[i] = 2 * kU * (bound[i] + std::fabs(double(ref[i]))) + 1e-6;
  return tol;
}

// GPU forward: out (bf16 -> float) and lse; outputs start NaN so unwritten elements fail.
struct GpuForward {
  DeviceBuffer<bf16> qkv, out;
  DeviceBuffer<float> lse;
};
GpuForward gpu_forward(const Case& c, const std::vector<float>& qkv) {
  const int64_t C = c.H * c.HD;
  GpuForward g{cuda_test::upload_bf16(qkv), DeviceBuffer<bf16>(size_t(c.B * c.T * C)),
               DeviceBuffer<float>(size_t(c.B * c.H * c.T))};
  g.out.fill_nan();
  g.lse.fill_nan();
  cuda::attention_forward(g.out, g.lse, g.qkv, c.B, c.T, c.H, c.HD, nullptr);
  cuda_test::sync();
  return g;
}

class CudaAttention : public ::testing::TestWithParam<Case> {};

TEST_P(CudaAttention, ForwardMatchesCpu) {
  QUEST_REQUIRE_CUDA();
  const Case c = GetParam();
  const Inputs in = make_inputs(c, 1000 + uint64_t(c.T) * 7 + uint64_t(c.HD));
  const GpuForward g = gpu_forward(c, in.qkv);
  const ForwardRef ref = forward_ref(c, in.qkv);
  const auto out = cuda_test::download_bf16(g.out);
  const auto lse = cuda_test::download(g.lse);
  EXPECT_TRUE(within(out, to_double(ref.out), tolerance(ref.pv_abs, ref.out), "out",
                     describer(c, 1)));
  EXPECT_TRUE(rms_close(out, to_double(ref.out), 1.0 / 64, "out"));
  std::vector<double> lse_tol(ref.lse.size());
  for (size_t i = 0; i < lse_tol.size(); ++i) lse_tol[i] = 5e-5 * (1 + std::fabs(ref.lse[i]));
  EXPECT_TRUE(within(lse, ref.lse, lse_tol, "lse", [c](size_t i) {
    std::ostringstream s;
    s << "lse[b=" << i / (c.H * c.T) << ", h=" << i / c.T % c.H << ", t=" << i % c.T << "]";
    return s.str();
  }));
}

TEST_P(CudaAttention, BackwardMatchesCpu) {
  QUEST_REQUIRE_CUDA();
  const Case c = GetParam();
  const int64_t C = c.H * c.HD;
  const Inputs in = make_inputs(c, 2000 + uint64_t(c.T) * 7 + uint64_t(c.HD));
  const GpuForward g = gpu_forward(c, in.qkv);
  const auto dout = cuda_test::upload_bf16(in.dout);
  DeviceBuffer<bf16> dqkv(size_t(c.B * c.T * 3 * C));
  dqkv.fill_nan();  // every q, k and v element must be overwritten
  DeviceBuffer<float> scratch(size_t(cuda::attention_backward_scratch(c.B, c.T, c.H, c.HD)));
  cuda::attention_backward(dqkv, dout, g.out, g.qkv, g.lse, c.B, c.T, c.H, c.HD, scratch, nullptr);
  cuda_test::sync();
  const auto got = cuda_test::download_bf16(dqkv);

  const ForwardRef f = forward_ref(c, in.qkv);
  const BackwardRef ref = backward_ref(c, in.qkv, in.dout, f);
  EXPECT_TRUE(within(got, to_double(ref.dqkv), tolerance(ref.bound, ref.dqkv), "dqkv",
                     describer(c, 3)));
  // Relative RMS error of each part separately (q, k, v).
  for (int part = 0; part < 3; ++part) {
    std::vector<float> a;
    std::vector<double> e;
    for (int64_t row = 0; row < c.B * c.T; ++row)
      for (int64_t j = part * C; j < (part + 1) * C; ++j) {
        a.push_back(got[size_t(row * 3 * C + j)]);
        e.push_back(ref.dqkv[size_t(row * 3 * C + j)]);
      }
    EXPECT_TRUE(rms_close(a, e, 1.0 / 64, std::string("d") + "qkv"[part]));
  }
}

// The training shape (head_dim 128, T = 512, two tiles' worth of heads), a peaky softmax, T = 1,
// T not a multiple of the 64-row tiles (77, 1100), head_dim 64, and head dims padded inside the
// kernels (96 -> 128, 32 -> 64).
INSTANTIATE_TEST_SUITE_P(
    Shapes, CudaAttention,
    ::testing::Values(Case{2, 512, 5, 128, 1.0}, Case{2, 512, 5, 128, 2.0}, Case{1, 1, 3, 128, 1.0},
                      Case{2, 77, 3, 128, 1.0}, Case{2, 512, 4, 64, 1.0}, Case{1, 77, 2, 64, 2.0},
                      Case{1, 1100, 2, 128, 1.5}, Case{2, 100, 2, 96, 1.0},
                      Case{1, 130, 2, 32, 1.0}, Case{3, 64, 1, 128, 1.0}),
    case_name);

// Batch elements are independent: B = 3 in one call equals three B = 1 calls on the slices, bit
// for bit (forward out and lse, backward dqkv), and the backward is deterministic (no atomics).
TEST(CudaAttentionConsistency, BatchSplittingAndDeterminism) {
  QUEST_REQUIRE_CUDA();
  for (const int64_t HD : {128, 64}) {
    const Case c{3, 200, 2, HD, 1.0};
    const int64_t C = c.H * c.HD, n_qkv = c.T * 3 * C, n_out = c.T * C, n_lse = c.H * c.T;
    const Inputs in = make_inputs(c, 77 + uint64_t(HD));
    const auto qkv = cuda_test::upload_bf16(in.qkv);
    const auto dout = cuda_test::upload_bf16(in.dout);
    DeviceBuffer<bf16> out(size_t(c.B * n_out)), out1(size_t(c.B * n_out));
    DeviceBuffer<float> lse(size_t(c.B * n_lse)), lse1(size_t(c.B * n_lse));
    DeviceBuffer<bf16> dqkv(size_t(c.B * n_qkv)), dqkv1(size_t(c.B * n_qkv)),
        dqkv2(size_t(c.B * n_qkv));
    DeviceBuffer<float> scratch(size_t(cuda::attention_backward_scratch(c.B, c.T, c.H, c.HD)));
    for (auto* buf : {&out, &out1}) buf->fill_nan();
    for (auto* buf : {&lse, &lse1}) buf->fill_nan();
    for (auto* buf : {&dqkv, &dqkv1, &dqkv2}) buf->fill_nan();

    cuda::attention_forward(out, lse, qkv, c.B, c.T, c.H, c.HD, nullptr);
    cuda::attention_backward(dqkv, dout, out, qkv, lse, c.B, c.T, c.H, c.HD, scratch, nullptr);
    cuda::attention_backward(dqkv2, dout, out, qkv, lse, c.B, c.T, c.H, c.HD, scratch, nullptr);
    for (int64_t b = 0; b < c.B; ++b) {
      cuda::attention_forward(out1.get() + b * n_out, lse1.get() + b * n_lse,
                              qkv.get() + b * n_qkv, 1, c.T, c.H, c.HD, nullptr);
      cuda::attention_backward(dqkv1.get() + b * n_qkv, dout.get() + b * n_out,
                               out1.get() + b * n_out, qkv.get() + b * n_qkv,
                               lse1.get() + b * n_lse, 1, c.T, c.H, c.HD, scratch, nullptr);
    }
    cuda_test::sync();
    const std::string hd = " (head_dim " + std::to_string(HD) + ")";
    EXPECT_TRUE(cuda_test::bit_equal(cuda_test::download_bf16(out1), cuda_test::download_bf16(out),
                                     "out, split vs whole" + hd));
    EXPECT_TRUE(cuda_test::bit_equal(cuda_test::download(lse1), cuda_test::download(lse),
                                     "lse, split vs whole" + hd));
    const auto d = cuda_test::download_bf16(dqkv);
    EXPECT_TRUE(cuda_test::bit_equal(cuda_test::download_bf16(dqkv1), d,
                                     "dqkv, split vs whole" + hd));
    EXPECT_TRUE(cuda_test::bit_equal(cuda_test::download_bf16(dqkv2), d, "dqkv, rerun" + hd));
  }
}

// The first query attends only to itself: out[t = 0] = v[0] exactly (p = 1; bf16 in, bf16 out),
// lse[t = 0] = its own scaled score.
TEST(CudaAttentionBasics, FirstTokenAttendsOnlyToItself) {
  QUEST_REQUIRE_CUDA();
  const Case c{2, 70, 3, 128, 1.0};
  const int64_t C = c.H * c.HD;
  const Inputs in = make_inputs(c, 5);
  const GpuForward g = gpu_forward(c, in.qkv);
  const auto out = cuda_test::download_bf16(g.out);
  const auto lse = cuda_test::download(g.lse);
  for (int64_t b = 0; b < c.B; ++b) {
    const float* row = in.qkv.data() + b * c.T * 3 * C;
    for (int64_t j = 0; j < C; ++j)
      ASSERT_EQ(out[size_t(b * c.T * C + j)], row[2 * C + j]) << "b=" << b << " col " << j;
    for (int64_t h = 0; h < c.H; ++h) {
      double s = 0.0;
      for (int64_t d = 0; d < c.HD; ++d) s += double(row[h * c.HD + d]) * row[C + h * c.HD + d];
      EXPECT_NEAR(lse[size_t((b * c.H + h) * c.T)], s / std::sqrt(double(c.HD)), 1e-4)
          << "b=" << b << " h=" << h;
    }
  }
}

// Argument errors are quest::Error, raised on the host before any device work (no GPU needed).
TEST(CudaAttentionBasics, RejectsUnsupportedShapes) {
  for (const int64_t hd : {0, 4, 12, 100, 136, 256})
    EXPECT_THROW(cuda::attention_forward(nullptr, nullptr, nullptr, 1, 8, 2, hd, nullptr), Error)
        << "head_dim " << hd;
  EXPECT_THROW(cuda::attention_forward(nullptr, nullptr, nullptr, 1, -1, 2, 64, nullptr), Error);
  EXPECT_THROW(cuda::attention_backward(nullptr, nullptr, nullptr, nullptr, nullptr, 1, 8, 2, 20,
                                        nullptr, nullptr),
               Error);
  // Nothing to do: no error, no launch.
  EXPECT_NO_THROW(cuda::attention_forward(nullptr, nullptr, nullptr, 0, 8, 2, 64, nullptr));
  EXPECT_NO_THROW(cuda::attention_backward(nullptr, nullptr, nullptr, nullptr, nullptr, 2, 0, 2,
                                           64, nullptr, nullptr));
  // Real shapes with missing buffers.
  EXPECT_THROW(cuda::attention_forward(nullptr, nullptr, nullptr, 1, 8, 2, 64, nullptr), Error);
}

}  // namespace
}  // namespace quest
