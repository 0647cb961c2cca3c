// LinearOp with quantizers: the full and half Hadamard forms agree, the full form is the plain
// composition of the quantizers with the product, learned parameters and mask statistics.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "quant/factory.h"
#include "quant/linear_op.h"
#include "quant_test_util.h"

namespace quest {
namespace {

// out[N,M] = a[N,K] . b[M,K]^T in double.
std::vector<double> matmul_nt(const std::vector<float>& a, const std::vector<float>& b, int64_t N,
                              int64_t K, int64_t M) {
  std::vector<double> out(size_t(N * M), 0.0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t m = 0; m < M; ++m) {
      double s = 0;
      for (int64_t k = 0; k < K; ++k) s += double(a[n * K + k]) * b[m * K + k];
      out[n * M + m] = s;
    }
  return out;
}

template <class A, class B>
void expect_close(const A& got, const B& want, double rel, const char* what) {
  ASSERT_EQ(got.size(), want.size());
  double scale = 0;
  for (auto v : want) scale = std::max(scale, std::fabs(double(v)));
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_NEAR(double(got[i]), double(want[i]), rel * scale + 1e-7) << what << " [" << i << "]";
}

struct StepResult {
  std::vector<float> y, dx, dw;
};

constexpr int64_t kIn = 256, kOut = 48, kN = 20, kMaxRows = 32;

StepResult run(LinearOp& op, const std::vector<float>& w, const std::vector<float>& x,
        const std::vector<float>& dy, const std::vector<float>& dw0) {
  StepResult r{std::vector<float>(kN * kOut), std::vector<float>(kN * kIn), dw0};
  op.prepare_weight(w.data());
  op.forward(x.data(), r.y.data(), kN);
  op.backward(dy.data(), r.dx.data(), r.dw.data(), kN);
  return r;
}

struct Data {
  std::vector<float> w = test::gaussian(kOut * kIn, 1, 0.05);
  std::vector<float> x = test::gaussian(kN * kIn, 2);
  std::vector<float> dy = test::gaussian(kN * kOut, 3);
  std::vector<float> dw0 = test::gaussian(kOut * kIn, 4, 0.1);  // dw accumulates onto this
};

TEST(LinearOp, PlainProduct) {
  Data d;
  LinearOp op(kIn, kOut, kMaxRows);
  EXPECT_FALSE(op.half_form());
  const StepResult r = run(op, d.w, d.x, d.dy, d.dw0);
  expect_close(r.y, matmul_nt(d.x, d.w, kN, kIn, kOut), 1e-5, "y");
  // dx = dy . W, dw = dw0 + dy^T . x
  std::vector<float> wt(kIn * kOut), dyt(kOut * kN), xt(kIn * kN);
  for (int64_t o = 0; o < kOut; ++o)
    for (int64_t i = 0; i < kIn; ++i) wt[i * kOut + o] = d.w[o * kIn + i];
  for (int64_t n = 0; n < kN; ++n)
    for (int64_t o = 0; o < kOut; ++o) dyt[o * kN + n] = d.dy[n * kOut + o];
  for (int64_t n = 0; n < kN; ++n)
    for (int64_t i = 0; i < kIn; ++i) xt[i * kN + n] = d.x[n * kIn + i];
  expect_close(r.dx, matmul_nt(d.dy, wt, kN, kOut, kIn), 1e-5, "dx");
  auto dw = matmul_nt(dyt, xt, kOut, kN, kIn);
  for (size_t i = 0; i < dw.size(); ++i) dw[i] += d.dw0[i];
  expect_close(r.dw, dw, 1e-5, "dw");
}

TEST(LinearOp, HalfAndFullFormsAgree) {
  Data d;
  for (const char* text : {"w=quest:4,a=quest:4", "w=quest:1,a=quest:1", "w=quest:2,a=quest:3",
                           "w=hadamard-clip:3:c=1.1,a=hadamard-ste:4", "w=hadamard-fp4,a=hadamard-fp4",
                           "w=quest:4", "a=quest:4", "w=hadamard-sparse48:4,a=quest:4",
                           "w=quest:8,a=quest:8"}) {
    SCOPED_TRACE(text);
    QuantConfig half = QuantConfig::parse(text), full = half;
    half.form = HadamardForm::Half;
    full.form = HadamardForm::Full;
    LinearOp a(kIn, kOut, kMaxRows, half), b(kIn, kOut, kMaxRows, full);
    EXPECT_TRUE(a.half_form());
    EXPECT_FALSE(b.half_form());
    const StepResult ra = run(a, d.w, d.x, d.dy, d.dw0), rb = run(b, d.w, d.x, d.dy, d.dw0);
    expect_close(ra.y, rb.y, 2e-5, "y");
    expect_close(ra.dx, rb.dx, 2e-5, "dx");
    expect_close(ra.dw, rb.dw, 2e-5, "dw");
    // Same masks (both forms quantize the same transformed rows).
    EXPECT_EQ(a.weight_masked_fraction(), b.weight_masked_fraction());
    EXPECT_EQ(a.input_masked_fraction(), b.input_masked_fraction());
    // Repeating the step gives the same result (no state leaks between steps).
    const StepResult ra2 = run(a, d.w, d.x, d.dy, d.dw0);
    EXPECT_EQ(ra2.y, ra.y);
    EXPECT_EQ(ra2.dw, ra.dw);
  }
}

TEST(LinearOp, FullFormIsTheQuantizersComposedWithTheProduct) {
  Data d;
  for (const char* text : {"w=lsq:4,a=quest:4", "w=trust:4,a=pact:4", "w=quest:2,a=clip:3",
                           "w=hadamard-sparse48:4,a=lsq:3"}) {
    SCOPED_TRACE(text);
    const QuantConfig cfg = QuantConfig::parse(text);  // form half: falls back to full
    LinearOp op(kIn, kOut, kMaxRows, cfg);
    EXPECT_FALSE(op.half_form());
    const StepResult r = run(op, d.w, d.x, d.dy, std::vector<float>(kOut * kIn, 0.0f));
    auto qw = make_quantizer(cfg.weight, QuantRole::Weight, kIn);
    auto qx = make_quantizer(cfg.input, QuantRole::Input, kIn);
    std::vector<float> wq(d.w.size()), xq(d.x.size());
    qw->forward(d.w.data(), wq.data(), kOut, kIn);
    qx->forward(d.x.data(), xq.data(), kN, kIn);
    expect_close(r.y, matmul_nt(xq, wq, kN, kIn, kOut), 1e-5, "y");
    // dx = Q_x.backward(dy . Wq); dW = Q_w.backward(dy^T . Xq)
    std::vector<float> wqt(kIn * kOut), dyt(kOut * kN), xqt(kIn * kN);
    for (int64_t o = 0; o < kOut; ++o)
      for (int64_t i = 0; i < kIn; ++i) wqt[i * kOut + o] = wq[o * kIn + i];
    for (int64_t n = 0; n < kN; ++n)
      for (int64_t o = 0; o < kOut; ++o) dyt[o * kN + n] = d.dy[n * kOut + o];
    for (int64_t n = 0; n < kN; ++n)
      for (int64_t i = 0; i < kIn; ++i) xqt[i * kN + n] = xq[n * kIn + i];
    const auto dx64 = matmul_nt(d.dy, wqt, kN, kOut, kIn);
    const auto dw64 = matmul_nt(dyt, xqt, kOut, kN, kIn);
    std::vector<float> dx(dx64.begin(), dx64.end()), dw(dw64.begin(), dw64.end());
    qx->backward(dx.data(), kN, kIn);
    qw->backward(dw.data(), kOut, kIn);
    expect_close(r.dx, dx, 1e-5, "dx");
    expect_close(r.dw, dw, 1e-5, "dw");
    // Learned parameters and their gradients match the standalone quantizers'.
    auto params = op.learned_params();
    size_t k = 0;
    for (TensorQuantizer* q : {qw.get(), qx.get()})
      for (size_t i = 0; i < q->params().size(); ++i, ++k) {
        ASSERT_LT(k, params.size());
        EXPECT_FLOAT_EQ(params[k].value[0], q->params()[i]) << params[k].name;
        EXPECT_NEAR(params[k].grad[0], q->param_grads()[i], 1e-4 * std::fabs(q->param_grads()[i]))
            << params[k].name;
      }
    EXPECT_EQ(k, params.size());
  }
}

TEST(LinearOp, LearnedParamNames) {
  LinearOp op(kIn, kOut, kMaxRows, QuantConfig::parse("w=lsq:4,a=pact:4"));
  const auto p = op.learned_params();
  ASSERT_EQ(p.size(), 2u);
  EXPECT_EQ(p[0].name, "weight.lsq_step");
  EXPECT_EQ(p[1].name, "input.pact_alpha");
  EXPECT_EQ(p[0].value[0], 0.0f);
  Data d;
  run(op, d.w, d.x, d.dy, d.dw0);
  EXPECT_GT(p[0].value[0], 0.0f);
  EXPECT_GT(p[1].value[0], 0.0f);
  EXPECT_NE(p[0].grad[0], 0.0f);
}

TEST(LinearOp, MaskStatisticsAndPersistence) {
  Data d;
  LinearOp op(kIn, kOut, kMaxRows, QuantConfig::parse("w=quest:2,a=quest:2"));
  op.prepare_weight(d.w.data());
  ASSERT_NE(op.weight_mask(), nullptr);
  EXPECT_GT(op.weight_masked_fraction(), 0.01);
  EXPECT_LT(op.weight_masked_fraction(), 0.10);
  const MaskBits before = *op.weight_mask();
  op.prepare_weight(d.w.data());
  EXPECT_EQ(*MaskBits::persistence(before, *op.weight_mask()), 1.0);
  auto w2 = d.w;
  const auto noise = test::gaussian(w2.size(), 9, 0.005);
  for (size_t i = 0; i < w2.size(); ++i) w2[i] += noise[i];
  op.prepare_weight(w2.data());
  const double p = *MaskBits::persistence(before, *op.weight_mask());
  EXPECT_GT(p, 0.3);
  EXPECT_LT(p, 1.0);
  std::vector<float> y(kN * kOut);
  op.forward(d.x.data(), y.data(), kN);
  ASSERT_NE(op.input_mask(), nullptr);
  EXPECT_EQ(op.input_mask()->rows(), kN);
  EXPECT_GT(op.input_masked_fraction(), 0.01);

  LinearOp ste(kIn, kOut, kMaxRows, QuantConfig::parse("w=ste:4,a=ste:4"));
  ste.prepare_weight(d.w.data());
  EXPECT_EQ(ste.weight_mask(), nullptr);
  EXPECT_EQ(ste.weight_masked_fraction(), 0.0);
}

TEST(LinearOp, FormSelectionAndErrors) {
  EXPECT_FALSE(LinearOp(kIn, kOut, 4, QuantConfig::parse("w=quest:4,a=lsq:4")).half_form());
  EXPECT_FALSE(LinearOp(kIn, kOut, 4, QuantConfig::parse("w=none,a=none")).half_form());
  EXPECT_FALSE(LinearOp(kIn, kOut, 4, QuantConfig::parse("w=trust:4,a=trust:4")).half_form());
  EXPECT_TRUE(LinearOp(kIn, kOut, 4, QuantConfig::parse("w=quest:4,a=none")).half_form());
  try {
    LinearOp(96, kOut, 4, QuantConfig::parse("w=quest:4,a=quest:4"));
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("multiple of 128, got 96"), std::string::npos) << e.what();
  }
  Data d;
  LinearOp op(kIn, kOut, kMaxRows, QuantConfig::parse("w=quest:4,a=quest:4"));
  std::vector<float> y(kN * kOut), dx(kN * kIn);
  EXPECT_THROW(op.forward(d.x.data(), y.data(), kN), Error);  // before prepare_weight
  op.prepare_weight(d.w.data());
  EXPECT_THROW(op.forward(d.x.data(), y.data(), kMaxRows + 1), Error);
  op.forward(d.x.data(), y.data(), kN);
  EXPECT_THROW(op.backward(d.dy.data(), dx.data(), nullptr, kN - 1), Error);
  // Moves keep the quantized state.
  LinearOp moved = std::move(op);
  moved.backward(d.dy.data(), dx.data(), nullptr, kN);
}

}  // namespace
}  // namespace quest
