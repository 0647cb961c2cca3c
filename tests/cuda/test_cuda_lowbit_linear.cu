// CudaLinearOp's options and fused passes (cuda_linear_op.h): the int8 forward product from the
// quantizer's codes, w2 taking w1's quantized input, and the fused backward passes.
// - CudaLowbitLinear.*: the integer product equals the exact product of the dequantized operands
//   (recovered from the op's saved xq, wq and steps) up to the output's bf16 rounding; the
//   backward is bit for bit the bf16 path's; the weight's codes come from prepare_weight only.
// - CudaLowbitLinearOffset.*: the same on offset codes (a layer whose product takes the
//   persistent 128 x 256 tile).
// - CudaSharedInput.*: a layer that takes another's quantized input computes bit for bit what it
//   computes quantizing the same x itself, forward and backward; sharing is refused where the
//   quantizers could differ.
// - CudaPairBackward.*: w1 + w2's input gradients in one product and one mask pass, against two
//   backwards and an add.
// - CudaSwigluBackward.*: the down projection's mask and transform fused into SwiGLU's backward,
//   bit for bit the plain sequence.
// - CudaNormBackward.*: a layer's mask and transform left to (deferred into) the RMSNorm backward
//   that reads its input gradient, bit for bit the plain sequence.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "cuda_test_util.h"
#include "quant/cuda/cuda_linear_op.h"
#include "quant/cuda/cuda_quant.h"
#include "quant/cuda/s8_gemm_sm90.h"
#include "quant/quant_spec.h"

namespace quest {
namespace {

using cuda::bf16;
using cuda::CudaLinearOp;
using cuda_test::DeviceBuffer;
using cuda_test::download;
using cuda_test::download_bf16;
using cuda_test::round_bf16;
using cuda_test::upload;
using cuda_test::upload_bf16;

constexpr int64_t kIn = 640, kOut = 384, kRows = 200, kMaxRows = 256;

std::vector<float> randn(int64_t n, uint64_t seed, double scale = 1.0) {
  Rng rng(seed);
  return cuda_test::randn(rng, size_t(n), scale);
}

double rms(const std::vector<float>& v) {
  double s = 0;
  for (float x : v) s += double(x) * x;
  return std::sqrt(s / double(v.size()));
}

// The exact operand of a product from its bf16 copy and the row steps: xq = c * step / 2 with an
// odd integer |c| <= 127, and bf16(xq) is within 2^-9 of it, so c = rint(2 * bf16(xq) / step).
std::vector<double> exact_operand(const std::vector<float>& q16, const std::vector<float>& step,
                                  int64_t cols) {
  std::vector<double> out(q16.size());
  for (size_t i = 0; i < q16.size(); ++i) {
    const double s = step[i / size_t(cols)];
    const double c = std::rint(2.0 * q16[i] / s);
    EXPECT_EQ(std::fmod(std::fabs(c), 2.0), 1.0) << "not an odd code at " << i;
    out[i] = c * double(float(s)) / 2.0;
  }
  return out;
}

struct Layer {
  cuda::Blas blas;
  cuda::LowbitGemm gemm;
  CudaLinearOp op;
  Layer(const std::string& cfg, bool lowbit)
      : op(kIn, kOut, kMaxRows, cfg.empty() ? QuantConfig::none() : QuantConfig::parse(cfg), blas) {
    EXPECT_EQ(op.use_lowbit_product(lowbit ? &gemm : nullptr), lowbit);
  }
};

class CudaLowbitLinear : public ::testing::TestWithParam<std::string> {};

TEST_P(CudaLowbitLinear, ForwardIsTheDequantizedProduct) {
  QUEST_REQUIRE_CUDA();
  const auto x = round_bf16(randn(kRows * kIn, 1));
  const auto w = randn(kOut * kIn, 2, 0.05);
  auto dx_in = upload_bf16(x);
  auto dw = upload(w);
  Layer L(GetParam(), true);
  L.op.prepare_weight(dw.get(), nullptr);
  ASSERT_TRUE(L.op.lowbit_active());
  DeviceBuffer<bf16> y(size_t(kRows * kOut));
  L.op.forward(dx_in.get(), y.get(), kRows, nullptr);
  cuda_test::sync();

  const auto xq = exact_operand(download_bf16(L.op.product_input(), size_t(kRows * kIn)),
                                download(L.op.input_quantizer()->row_steps(), size_t(kRows)), kIn);
  const auto wq = exact_operand(download_bf16(L.op.product_weight(), size_t(kOut * kIn)),
                                download(L.op.weight_quantizer()->row_steps(), size_t(kOut)), kIn);
  std::vector<float> want(size_t(kRows * kOut));
  for (int64_t n = 0; n < kRows; ++n)
    for (int64_t m = 0; m < kOut; ++m) {
      double s = 0;
      for (int64_t k = 0; k < kIn; ++k) s += xq[size_t(n * kIn + k)] * wq[size_t(m * kIn + k)];
      want[size_t(n * kOut + m)] = float(s);
    }
  // Exact integer sums and fp32 scales: only the bf16 rounding of y (2^-9 relative) remains.
  const auto got = download_bf16(y);
  EXPECT_TRUE(cuda_test::all_close(got, want, 1e-6 * rms(want), 1.0 / 256, "y"));
}

TEST_P(CudaLowbitLinear, BackwardIsTheBf16PathsBitForBit) {
  QUEST_REQUIRE_CUDA();
  const auto x = round_bf16(randn(kRows * kIn, 3));
  const auto w = randn(kOut * kIn, 4, 0.05);
  const auto dy = round_bf16(randn(kRows * kOut, 5));
  auto dx_in = upload_bf16(x);
  auto dw32 = upload(w);
  auto ddy = upload_bf16(dy);
  std::vector<float> ys[2], dxs[2], dws[2];
  for (int lowbit = 0; lowbit < 2; ++lowbit) {
    Layer L(GetParam(), lowbit == 1);
    L.op.prepare_weight(dw32.get(), nullptr);
    EXPECT_EQ(L.op.lowbit_active(), lowbit == 1);
    DeviceBuffer<bf16> y(size_t(kRows * kOut)), dx(size_t(kRows * kIn));
    auto grad = upload(std::vector<float>(size_t(kOut * kIn), 0.25f));
    L.op.forward(dx_in.get(), y.get(), kRows, nullptr);
    L.op.backward(ddy.get(), dx.get(), grad.get(), kRows, nullptr);
    cuda_test::sync();
    ys[lowbit] = download_bf16(y);
    dxs[lowbit] = download_bf16(dx);
    dws[lowbit] = download(grad);
  }
  EXPECT_TRUE(cuda_test::bit_equal(dxs[1], dxs[0], "dx"));
  EXPECT_TRUE(cuda_test::bit_equal(dws[1], dws[0], "dw"));
  // The two forwards differ only by the rounding of the operands to bf16 in the bf16 path.
  EXPECT_TRUE(cuda_test::all_close(ys[1], ys[0], 0.02 * rms(ys[0]), 1.0 / 32, "y"));
  EXPECT_FALSE(cuda_test::bit_equal(ys[1], ys[0], "y"));  // the integer path really ran
}

INSTANTIATE_TEST_SUITE_P(Configs, CudaLowbitLinear,
                         ::testing::Values("w=quest:4,a=quest:4", "w=quest:1,a=quest:1",
                                           "w=quest:7,a=quest:2", "w=hadamard-ste:3,a=hadamard-clip:4"),
                         [](const auto& info) {
                           std::string s = info.param;
                           for (char& c : s)
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           return s;
                         });

// A layer whose product takes the persistent 128 x 256 tile (more tiles than SMs, long K, wide
// output) runs on offset codes (cuda_linear_op.h): still the dequantized product, checked on a
// sample of rows; and a layer with the other form of codes cannot share its input.
TEST(CudaLowbitLinearOffset, ForwardIsTheDequantizedProduct) {
  QUEST_REQUIRE_CUDA();
  if (!cuda::s8_gemm_sm90_available()) GTEST_SKIP() << "offset codes need s8_gemm_sm90";
  constexpr int64_t in = 2176, out = 1024, rows = 4352;
  ASSERT_EQ(cuda::s8_gemm_sm90_tile(rows, in, out), cuda::S8Sm90Tile::k128x256p);
  const auto x = round_bf16(randn(rows * in, 31));
  const auto w = randn(out * in, 32, 0.05);
  auto dx_in = upload_bf16(x);
  auto dw = upload(w);
  cuda::Blas blas;
  cuda::LowbitGemm gemm;
  CudaLinearOp op(in, out, rows, QuantConfig::parse("w=quest:4,a=quest:3"), blas);
  ASSERT_TRUE(op.use_lowbit_product(&gemm));
  op.prepare_weight(dw.get(), nullptr);
  DeviceBuffer<bf16> y(size_t(rows * out));
  op.forward(dx_in.get(), y.get(), rows, nullptr);
  cuda_test::sync();
  const auto xq = exact_operand(download_bf16(op.product_input(), size_t(rows * in)),
                                download(op.input_quantizer()->row_steps(), size_t(rows)), in);
  const auto wq = exact_operand(download_bf16(op.product_weight(), size_t(out * in)),
                                download(op.weight_quantizer()->row_steps(), size_t(out)), in);
  const auto got = download_bf16(y);
  std::vector<float> want, have;
  for (int64_t n = 0; n < rows; n += 97)
    for (int64_t m = 0; m < out; ++m) {
      double s = 0;
      for (int64_t k = 0; k < in; ++k) s += xq[size_t(n * in + k)] * wq[size_t(m * in + k)];
      want.push_back(float(s));
      have.push_back(got[size_t(n * out + m)]);
    }
  EXPECT_TRUE(cuda_test::all_close(have, want, 1e-6 * rms(want), 1.0 / 256, "y"));

  CudaLinearOp narrow(in, 384, rows, QuantConfig::parse("w=quest:4,a=quest:3"), blas);
  ASSERT_TRUE(narrow.use_lowbit_product(&gemm));  // 128 x 128 tiles: signed codes
  EXPECT_FALSE(narrow.share_input_quantization(op));
}

TEST(CudaLowbitLinearChecks, WhereItAppliesAndWeightCodesOncePerStep) {
  QUEST_REQUIRE_CUDA();
  cuda::Blas blas;
  cuda::LowbitGemm gemm;
  for (const char* cfg : {"w=quest:8,a=quest:8", "w=quest:4,a=lsq:4", "w=quest:4",
                          "w=quest:4,a=quest:4,form=full", "w=ste:4,a=ste:4"}) {
    CudaLinearOp op(kIn, kOut, kMaxRows, QuantConfig::parse(cfg), blas);
    EXPECT_FALSE(op.use_lowbit_product(&gemm)) << cfg;
  }
  CudaLinearOp op(kIn, kOut, kMaxRows, QuantConfig::parse("w=quest:4,a=quest:4"), blas);
  ASSERT_TRUE(op.use_lowbit_product(&gemm));
  EXPECT_FALSE(op.lowbit_active());  // until prepare_weight writes the weight's codes
  auto w = upload(randn(kOut * kIn, 6, 0.05));
  auto x = upload_bf16(randn(kRows * kIn, 7));
  DeviceBuffer<bf16> y1(size_t(kRows * kOut)), y2(size_t(kRows * kOut));
  op.prepare_weight(w.get(), nullptr);
  op.forward(x.get(), y1.get(), kRows, nullptr);
  // Changing the master weight without prepare_weight changes nothing: the codes are the step's.
  QUEST_CUDA_CHECK(cudaMemset(w.get(), 0, size_t(kOut * kIn) * sizeof(float)));
  op.forward(x.get(), y2.get(), kRows, nullptr);
  cuda_test::sync();
  EXPECT_TRUE(cuda_test::bit_equal(download_bf16(y2), download_bf16(y1), "y"));
  // A packed export's values have no codes: the bf16 product until the next prepare_weight.
  op.set_product_weight(op.product_weight(), nullptr);
  EXPECT_FALSE(op.lowbit_active());
  op.prepare_weight(w.get(), nullptr);
  EXPECT_TRUE(op.lowbit_active());
}

class CudaSharedInput : public ::testing::TestWithParam<bool> {};  // the int8 product on / off

TEST_P(CudaSharedInput, SameAsQuantizingItself) {
  QUEST_REQUIRE_CUDA();
  const bool lowbit = GetParam();
  const std::string cfg = "w=quest:4,a=quest:4";
  const auto x = round_bf16(randn(kRows * kIn, 8));
  const auto dy = round_bf16(randn(kRows * kOut, 9));
  auto dx_in = upload_bf16(x);
  auto ddy = upload_bf16(dy);
  auto w1 = upload(randn(kOut * kIn, 10, 0.05)), w2 = upload(randn(kOut * kIn, 11, 0.05));
  Layer a(cfg, lowbit), b(cfg, lowbit), alone(cfg, lowbit);
  ASSERT_TRUE(b.op.share_input_quantization(a.op));
  a.op.prepare_weight(w1.get(), nullptr);
  b.op.prepare_weight(w2.get(), nullptr);
  alone.op.prepare_weight(w2.get(), nullptr);
  DeviceBuffer<bf16> ya(size_t(kRows * kOut)), yb(size_t(kRows * kOut)), y0(size_t(kRows * kOut));
  DeviceBuffer<bf16> dxa(size_t(kRows * kIn)), dxb(size_t(kRows * kIn)), dx0(size_t(kRows * kIn));
  auto gb = upload(std::vector<float>(size_t(kOut * kIn), 0.0f));
  auto g0 = upload(std::vector<float>(size_t(kOut * kIn), 0.0f));
  // A different x first: b must not take a's input of another tensor.
  auto other = upload_bf16(randn(kRows * kIn, 12));
  b.op.forward(other.get(), yb.get(), kRows, nullptr);
  EXPECT_NE(b.op.input_quantizer(), a.op.input_quantizer());
  a.op.forward(dx_in.get(), ya.get(), kRows, nullptr);
  b.op.forward(dx_in.get(), yb.get(), kRows, nullptr);
  EXPECT_EQ(b.op.input_quantizer(), a.op.input_quantizer());
  alone.op.forward(dx_in.get(), y0.get(), kRows, nullptr);
  a.op.backward(ddy.get(), dxa.get(), nullptr, kRows, nullptr);
  b.op.backward(ddy.get(), dxb.get(), gb.get(), kRows, nullptr);
  alone.op.backward(ddy.get(), dx0.get(), g0.get(), kRows, nullptr);
  cuda_test::sync();
  EXPECT_TRUE(cuda_test::bit_equal(download_bf16(yb), download_bf16(y0), "y"));
  EXPECT_TRUE(cuda_test::bit_equal(download_bf16(dxb), download_bf16(dx0), "dx"));
  EXPECT_TRUE(cuda_test::bit_equal(download(gb), download(g0), "dw"));
}

INSTANTIATE_TEST_SUITE_P(Product, CudaSharedInput, ::testing::Bool());

TEST(CudaSharedInputChecks, RefusedWhereTheQuantizersCouldDiffer) {
  QUEST_REQUIRE_CUDA();
  cuda::Blas blas;
  auto op = [&](const char* cfg, int64_t in = kIn) {
    return std::make_unique<CudaLinearOp>(in, kOut, kMaxRows, QuantConfig::parse(cfg), blas);
  };
  auto src = op("w=quest:4,a=quest:4");
  EXPECT_FALSE(op("w=quest:4,a=quest:3")->share_input_quantization(*src));   // another spec
  EXPECT_FALSE(op("w=quest:4,a=quest:4", 768)->share_input_quantization(*src));  // another K
  EXPECT_FALSE(op("w=quest:4")->share_input_quantization(*src));             // no input quantizer
  auto lsq = op("w=quest:4,a=lsq:4");
  EXPECT_FALSE(op("w=quest:4,a=lsq:4")->share_input_quantization(*lsq));    // learned step
  EXPECT_FALSE(src->share_input_quantization(*src));
  EXPECT_TRUE(op("w=quest:2,a=quest:4")->share_input_quantization(*src));   // weights may differ
}

// CudaLinearOp::backward_shared_input against the two backwards and an add: the weight gradients
// bit for bit, dx to the rounding of the one sum the separate path rounds twice.
class CudaPairBackward : public ::testing::TestWithParam<std::pair<const char*, bool>> {};

TEST_P(CudaPairBackward, SameAsTwoBackwardsAndAnAdd) {
  QUEST_REQUIRE_CUDA();
  const auto [cfg, lowbit] = GetParam();
  const auto x = upload_bf16(randn(kRows * kIn, 13));
  const auto dya = upload_bf16(randn(kRows * kOut, 14)), dyb = upload_bf16(randn(kRows * kOut, 15));
  auto w1 = upload(randn(kOut * kIn, 16, 0.05)), w2 = upload(randn(kOut * kIn, 17, 0.05));
  std::vector<float> dx[2], dwa[2], dwb[2];
  for (int pair = 0; pair < 2; ++pair) {
    Layer a(cfg, lowbit), b(cfg, lowbit);
    b.op.share_input_quantization(a.op);
    a.op.prepare_weight(w1.get(), nullptr);
    b.op.prepare_weight(w2.get(), nullptr);
    DeviceBuffer<bf16> ya(size_t(kRows * kOut)), yb(size_t(kRows * kOut));
    DeviceBuffer<bf16> d(size_t(kRows * kIn)), scratch(size_t(kRows * kIn));
    auto ga = upload(std::vector<float>(size_t(kOut * kIn), 0.5f));
    auto gb = upload(std::vector<float>(size_t(kOut * kIn), -0.5f));
    a.op.forward(x.get(), ya.get(), kRows, nullptr);
    b.op.forward(x.get(), yb.get(), kRows, nullptr);
    if (pair) {
      CudaLinearOp::backward_shared_input(a.op, dya.get(), ga.get(), b.op, dyb.get(), gb.get(),
                                          d.get(), scratch.get(), kRows, nullptr);
    } else {
      a.op.backward(dya.get(), d.get(), ga.get(), kRows, nullptr);
      b.op.backward(dyb.get(), scratch.get(), gb.get(), kRows, nullptr);
      cuda::add(d.get(), d.get(), scratch.get(), kRows * kIn, nullptr);
    }
    cuda_test::sync();
    dx[pair] = download_bf16(d), dwa[pair] = download(ga), dwb[pair] = download(gb);
  }
  EXPECT_TRUE(cuda_test::bit_equal(dwa[1], dwa[0], "dw a"));
  EXPECT_TRUE(cuda_test::bit_equal(dwb[1], dwb[0], "dw b"));
  // The pair path rounds the pre-transform sum once where the other rounds each product and the
  // sum; through the transform a rounding of the larger pre-transform values moves an entry by up
  // to a few bf16 ulps of them: 3% of the rms bounds it (a missing mask, transform or term is
  // of the order of the rms).
  EXPECT_TRUE(cuda_test::all_close(dx[1], dx[0], 0.03 * rms(dx[0]), 1.0 / 64, "dx"));
  EXPECT_GT(rms(dx[0]), 0.0);
}

INSTANTIATE_TEST_SUITE_P(Configs, CudaPairBackward,
                         ::testing::Values(std::pair{"w=quest:4,a=quest:4", true},
                                           std::pair{"w=quest:4,a=quest:4", false},
                                           std::pair{"w=quest:4", false},  // transform, no input quantizer
                                           std::pair{"", false},           // bf16
                                           std::pair{"w=quest:4,a=lsq:4", false}),  // two backwards
                         [](const auto& info) {
                           std::string s = std::string(info.param.first[0] ? info.param.first : "none") +
                                           (info.param.second ? "_int8" : "");
                           for (char& c : s)
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           return s;
                         });

// CudaLinearOp::backward_swiglu (the mask, transform and SwiGLU backward in one pass where it
// applies) against backward() and swiglu_backward, bit for bit.
class CudaSwigluBackward : public ::testing::TestWithParam<const char*> {};

TEST_P(CudaSwigluBackward, SameAsBackwardThenSwiglu) {
  QUEST_REQUIRE_CUDA();
  const std::string cfg = GetParam();
  const auto a = upload_bf16(randn(kRows * kIn, 18)), b = upload_bf16(randn(kRows * kIn, 19));
  const auto dy = upload_bf16(randn(kRows * kOut, 20));
  auto w = upload(randn(kOut * kIn, 21, 0.05));
  std::vector<float> da[2], db[2], dw[2];
  for (int fused = 0; fused < 2; ++fused) {
    Layer L(cfg, false);
    L.op.prepare_weight(w.get(), nullptr);
    DeviceBuffer<bf16> g(size_t(kRows * kIn)), y(size_t(kRows * kOut));
    DeviceBuffer<bf16> dda(size_t(kRows * kIn)), ddb(size_t(kRows * kIn)), dg(size_t(kRows * kIn));
    auto gw = upload(std::vector<float>(size_t(kOut * kIn), 0.25f));
    cuda::swiglu_forward(g.get(), a.get(), b.get(), kRows * kIn, nullptr);
    L.op.forward(g.get(), y.get(), kRows, nullptr);
    if (fused) {
      L.op.backward_swiglu(dy.get(), gw.get(), a.get(), b.get(), dda.get(), ddb.get(), dg.get(),
                           kRows, nullptr);
    } else {
      L.op.backward(dy.get(), dg.get(), gw.get(), kRows, nullptr);
      cuda::swiglu_backward(dda.get(), ddb.get(), dg.get(), a.get(), b.get(), kRows * kIn, nullptr);
    }
    cuda_test::sync();
    da[fused] = download_bf16(dda), db[fused] = download_bf16(ddb), dw[fused] = download(gw);
  }
  EXPECT_TRUE(cuda_test::bit_equal(da[1], da[0], "da"));
  EXPECT_TRUE(cuda_test::bit_equal(db[1], db[0], "db"));
  EXPECT_TRUE(cuda_test::bit_equal(dw[1], dw[0], "dw"));
  EXPECT_GT(rms(da[0]), 0.0);
}

INSTANTIATE_TEST_SUITE_P(Configs, CudaSwigluBackward,
                         ::testing::Values("w=quest:4,a=quest:4", "w=quest:1,a=quest:1",
                                           "w=hadamard-ste:4,a=hadamard-ste:4", "w=quest:4", "",
                                           "w=quest:4,a=lsq:4", "w=quest:4,a=quest:4,form=full"),
                         [](const auto& info) {
                           std::string s = info.param[0] ? info.param : "none";
                           for (char& c : s)
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           return s;
                         });

// CudaLinearOp::backward(..., defer_mask) + mask_ht_rmsnorm_backward against backward() and
// rmsnorm_backward: the RMSNorm's dx (fp32, accumulating onto non-zero values), its bf16 copy,
// its weight gradient and the layer's weight gradient, bit for bit. The mask is owed exactly
// where it is the half form's (grid family with the transform, or the transform alone).
class CudaNormBackward : public ::testing::TestWithParam<std::pair<const char*, bool>> {};

TEST_P(CudaNormBackward, DeferredMaskSameAsBackwardThenRmsNorm) {
  QUEST_REQUIRE_CUDA();
  const auto [cfg, owes] = GetParam();
  const float eps = 1e-5f;
  const auto res = randn(kRows * kIn, 22, 1.5);
  auto nw = randn(kIn, 23, 0.2);
  for (auto& v : nw) v += 1.0f;
  const auto dy = upload_bf16(randn(kRows * kOut, 24));
  const auto dx0 = randn(kRows * kIn, 25, 0.5);
  auto w = upload(randn(kOut * kIn, 26, 0.05));
  auto x = upload(res), gnw = upload(nw);
  DeviceBuffer<bf16> ln(size_t(kRows * kIn));
  DeviceBuffer<float> rstd{size_t(kRows)};
  cuda::rmsnorm_forward(ln.get(), rstd.get(), x.get(), gnw.get(), kRows, kIn, eps, nullptr);
  std::vector<float> dx[2], copy[2], dnw[2], dw[2];
  for (int deferred = 0; deferred < 2; ++deferred) {
    Layer L(cfg, false);
    L.op.prepare_weight(w.get(), nullptr);
    DeviceBuffer<bf16> y(size_t(kRows * kOut)), dln(size_t(kRows * kIn)), dcopy(size_t(kRows * kIn));
    DeviceBuffer<float> scratch(size_t(cuda::rmsnorm_backward_scratch(kRows, kIn)));
    auto gw = upload(std::vector<float>(size_t(kOut * kIn), 0.25f));
    auto ddx = upload(dx0);
    auto gdnw = upload(std::vector<float>(size_t(kIn), -0.5f));
    L.op.forward(ln.get(), y.get(), kRows, nullptr);
    const auto owed = L.op.backward(dy.get(), dln.get(), gw.get(), kRows, nullptr, deferred == 1);
    EXPECT_EQ(owed.owed, deferred == 1 && owes) << cfg;
    if (owed.owed) {
      ASSERT_TRUE(cuda::mask_ht_rmsnorm_backward(ddx.get(), dcopy.get(), gdnw.get(), dln.get(), owed.mask,
                                                 x.get(), gnw.get(), rstd.get(), kRows, kIn,
                                                 scratch.get(), nullptr));
    } else {
      cuda::rmsnorm_backward(ddx.get(), dcopy.get(), gdnw.get(), dln.get(), x.get(), gnw.get(), rstd.get(), kRows,
                             kIn, scratch.get(), nullptr);
    }
    cuda_test::sync();
    dx[deferred] = download(ddx), copy[deferred] = download_bf16(dcopy);
    dnw[deferred] = download(gdnw), dw[deferred] = download(gw);
  }
  EXPECT_TRUE(cuda_test::bit_equal(dx[1], dx[0], "dx"));
  EXPECT_TRUE(cuda_test::bit_equal(copy[1], copy[0], "dx copy"));
  EXPECT_TRUE(cuda_test::bit_equal(dnw[1], dnw[0], "norm dw"));
  EXPECT_TRUE(cuda_test::bit_equal(dw[1], dw[0], "layer dw"));
  double change = 0;  // the gradient reached dx
  for (size_t i = 0; i < dx0.size(); ++i) change = std::max(change, std::fabs(double(dx[0][i]) - dx0[i]));
  EXPECT_GT(change, 1e-3);
}

INSTANTIATE_TEST_SUITE_P(Configs, CudaNormBackward,
                         ::testing::Values(std::pair{"w=quest:4,a=quest:4", true},
                                           std::pair{"w=quest:1,a=quest:1", true},
                                           std::pair{"w=hadamard-ste:4,a=hadamard-ste:4", true},
                                           std::pair{"w=quest:4", true},  // the transform alone
                                           std::pair{"", false},          // bf16: no pass at all
                                           std::pair{"w=quest:4,a=lsq:4", false},
                                           std::pair{"w=quest:4,a=quest:4,form=full", false}),
                         [](const auto& info) {
                           std::string s = info.param.first[0] ? info.param.first : "none";
                           for (char& c : s)
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           return s;
                         });

// Where the one-pass kernel does not apply it launches nothing and says so.
TEST(CudaNormBackward, RefusesRowsOfPartialBlocks) {
  QUEST_REQUIRE_CUDA();
  DeviceBuffer<float> f(size_t(64 * 200));
  DeviceBuffer<bf16> h(size_t(64 * 200));
  EXPECT_FALSE(cuda::mask_ht_rmsnorm_backward(f.get(), h.get(), f.get(), h.get(), nullptr, f.get(), f.get(),
                                              f.get(), 4, 200, f.get(), nullptr));  // 200 % 128 != 0
  EXPECT_FALSE(cuda::mask_ht_rmsnorm_backward(f.get(), h.get(), f.get(), h.get(), nullptr, f.get(), f.get(),
                                              f.get(), 2, 4096, f.get(), nullptr));  // over 2048
}

}  // namespace
}  // namespace quest
