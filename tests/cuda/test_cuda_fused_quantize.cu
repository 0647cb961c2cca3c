// The producer-fused input quantizers (src/quant/cuda/fused_quantize.cu, issue 9 item 3) against
// the unfused sequence they replace, bit for bit:
// - CudaFusedQuantize.RmsNorm / .Swiglu: DeviceQuantizer::forward_rmsnorm / forward_swiglu against
//   rmsnorm_forward / swiglu_forward followed by forward (bits 8) or forward_with_codes (bits
//   <= 7), Half form: xq, mask, step, codes, rstd and the optional ln / g, at the model widths and
//   a row count that is not a multiple of the rows per CTA, trust, clip and ste rules;
// - CudaFusedQuantize.AddRmsNorm: forward_add_rmsnorm (the residual add folded in front) against
//   cuda::add followed by the plain sequence above: res_out too, also in place (res_out aliasing
//   res_in); CudaAddRmsNorm.SameAsAddThenRmsNorm: the plain kernel cuda::add_rmsnorm_forward
//   against add + rmsnorm_forward (both vector widths, the misaligned fallback, in place);
// - CudaFusedLinear.*: CudaLinearOp::forward_rmsnorm / forward_add_rmsnorm / forward_swiglu
//   against the plain ops and forward(): y (and res_out), then dx and dw after the same
//   backward; with the int8 product and with w2 taking w1's quantized input (ln not written).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "core/rng.h"
#include "cuda/cuda_test_util.h"
#include "quant/cuda/cuda_linear_op.h"
#include "quant/cuda/cuda_quant.h"
#include "quant/cuda/lowbit_gemm.h"
#include "quant/quant_spec.h"

namespace quest {
namespace {

using cuda::DeviceQuantizer;
using cuda::QuantForm;
using cuda_test::bf16;
using cuda_test::bit_equal;
using cuda_test::DeviceBuffer;
using cuda_test::download;
using cuda_test::download_bf16;
using cuda_test::upload;
using cuda_test::upload_bf16;

// Rows of varied scale (the steps differ per row), non-zero entries.
std::vector<float> scaled_rows(int64_t rows, int64_t cols, uint64_t seed, double base) {
  Rng rng(seed);
  std::vector<float> v(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    const double s = base * std::exp(2.0 * rng.uniform() - 1.0);
    for (int64_t c = 0; c < cols; ++c) {
      float x = float(s * rng.normal());
      if (x == 0.0f) x = float(s);
      v[static_cast<size_t>(r * cols + c)] = x;
    }
  }
  return v;
}

// Everything a Half-form quantizer forward leaves behind, downloaded.
struct QuantOut {
  std::vector<float> xq, step;
  std::vector<uint64_t> mask;
  std::vector<int8_t> codes;
};
QuantOut read_out(const DeviceQuantizer& q, const DeviceBuffer<bf16>& xq,
                  const DeviceBuffer<int8_t>* codes, int64_t rows) {
  QuantOut o;
  o.xq = download_bf16(xq.get(), static_cast<size_t>(rows * q.cols()));
  o.step = download(q.row_steps(), static_cast<size_t>(rows));
  if (q.mask()) o.mask = download(q.mask(), static_cast<size_t>(rows * q.words_per_row()));
  if (codes) o.codes = download(codes->get(), static_cast<size_t>(rows * q.cols()));
  return o;
}
void expect_same(const QuantOut& fused, const QuantOut& plain) {
  EXPECT_TRUE(bit_equal(fused.xq, plain.xq, "xq"));
  EXPECT_TRUE(bit_equal(fused.step, plain.step, "step"));
  EXPECT_TRUE(fused.mask == plain.mask) << "mask words differ";
  EXPECT_TRUE(fused.codes == plain.codes) << "codes differ";
}

std::vector<std::string> fused_specs() {
  return {"hadamard-trust:1",  "hadamard-trust:2", "hadamard-trust:4",
          "hadamard-trust:7",  "hadamard-trust:8", "hadamard-clip:4:c=0.8",
          "hadamard-ste:3"};
}

// The plain sequence's quantizer step on the producer's bf16 output x.
void plain_quantize(DeviceQuantizer& q, const bf16* x, DeviceBuffer<bf16>& xq,
                    DeviceBuffer<int8_t>* codes, int64_t rows) {
  if (codes)
    q.forward_with_codes(x, xq.get(), codes->get(), rows, nullptr);
  else
    q.forward(x, xq.get(), rows, QuantForm::Half, nullptr);
}

// Every spec on few rows; on many rows (several CTAs) the presets' two.
bool checked_at(const std::string& spec, int64_t rows) {
  return rows <= 100 || spec == "hadamard-trust:4" || spec == "hadamard-trust:1";
}

// RMSNorm weights around 1.
std::vector<float> norm_weights(int64_t d, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> w(static_cast<size_t>(d));
  for (auto& v : w) v = float(1.0 + 0.3 * rng.normal());
  return w;
}

// One spec's quantizer for the plain sequence and one for the fused pass, with their outputs:
// xq_p / codes_p (plain), xq_f / codes_f (fused) and xq_f2 (a second fused call).
struct QuantPair {
  int64_t rows;
  DeviceQuantizer plain, fused;
  bool with_codes;
  DeviceBuffer<bf16> xq_p, xq_f, xq_f2;
  DeviceBuffer<int8_t> codes_p, codes_f;
  QuantPair(const std::string& spec, int64_t rows_, int64_t cols)
      : rows(rows_),
        plain(QuantSpec::parse(spec), QuantRole::Input, rows_, cols),
        fused(QuantSpec::parse(spec), QuantRole::Input, rows_, cols),
        with_codes(fused.codes_supported()),
        xq_p(size(cols)), xq_f(size(cols)), xq_f2(size(cols)),
        codes_p(with_codes ? size(cols) : 0), codes_f(with_codes ? size(cols) : 0) {}
  size_t size(int64_t cols) const { return static_cast<size_t>(rows * cols); }
  int8_t* fused_codes() { return with_codes ? codes_f.get() : nullptr; }
  void run_plain(const bf16* x) { plain_quantize(plain, x, xq_p, with_codes ? &codes_p : nullptr, rows); }
  QuantOut plain_out() const { return read_out(plain, xq_p, with_codes ? &codes_p : nullptr, rows); }
  QuantOut fused_out(const DeviceBuffer<bf16>& xq) const {
    return read_out(fused, xq, with_codes ? &codes_f : nullptr, rows);
  }
};

TEST(CudaFusedQuantize, RmsNorm) {
  QUEST_REQUIRE_CUDA();
  constexpr float eps = 1e-5f;
  for (const int64_t d : {640, 1280, 1792, 3584}) {
    for (const int64_t rows : {int64_t(37), int64_t(1000)}) {
      const auto x = scaled_rows(rows, d, 11 + uint64_t(d) + uint64_t(rows), 1.0);
      auto dx = upload(x);
      auto dw = upload(norm_weights(d, 5 + uint64_t(d)));
      for (const auto& name : fused_specs()) {
        if (!checked_at(name, rows)) continue;
        SCOPED_TRACE(name + " d " + std::to_string(d) + " rows " + std::to_string(rows));
        QuantPair q(name, rows, d);
        ASSERT_TRUE(q.fused.fused_supported());
        const size_t n = q.size(d);
        DeviceBuffer<bf16> ln_p(n), ln_f(n);
        DeviceBuffer<float> rstd_p(static_cast<size_t>(rows)), rstd_f(static_cast<size_t>(rows));

        cuda::rmsnorm_forward(ln_p.get(), rstd_p.get(), dx.get(), dw.get(), rows, d, eps, nullptr);
        q.run_plain(ln_p.get());
        ASSERT_TRUE(q.fused.forward_rmsnorm(dx.get(), dw.get(), eps, rstd_f.get(), ln_f.get(),
                                            q.xq_f.get(), q.fused_codes(), rows, nullptr));
        cuda_test::sync();
        expect_same(q.fused_out(q.xq_f), q.plain_out());
        EXPECT_TRUE(bit_equal(download(rstd_f), download(rstd_p), "rstd"));
        EXPECT_TRUE(bit_equal(download_bf16(ln_f), download_bf16(ln_p), "ln"));
        EXPECT_EQ(q.fused.last_rows(), rows);

        // Without ln: the same quantized outputs.
        ASSERT_TRUE(q.fused.forward_rmsnorm(dx.get(), dw.get(), eps, rstd_f.get(), nullptr,
                                            q.xq_f2.get(), nullptr, rows, nullptr));
        cuda_test::sync();
        EXPECT_TRUE(bit_equal(download_bf16(q.xq_f2), download_bf16(q.xq_p), "xq without ln"));
      }
    }
  }
}

// The residual variant: res_out = res_in + branch, then RMSNorm and the quantizer, against
// cuda::add then rmsnorm_forward then the quantizer. Widths of the 30M / 200M models, a row count
// that is not a multiple of 8 (the rows per CTA at P = 1) and one of several CTAs.
TEST(CudaFusedQuantize, AddRmsNorm) {
  QUEST_REQUIRE_CUDA();
  constexpr float eps = 1e-5f;
  for (const int64_t d : {640, 1280}) {
    for (const int64_t rows : {int64_t(37), int64_t(1003)}) {
      const auto res = scaled_rows(rows, d, 41 + uint64_t(d) + uint64_t(rows), 1.0);
      const auto br = cuda_test::round_bf16(scaled_rows(rows, d, 51 + uint64_t(d) + uint64_t(rows), 0.5));
      auto dres = upload(res);
      auto dbr = upload_bf16(br);
      auto dw = upload(norm_weights(d, 6 + uint64_t(d)));
      for (const auto& name : fused_specs()) {
        if (!checked_at(name, rows)) continue;
        SCOPED_TRACE(name + " d " + std::to_string(d) + " rows " + std::to_string(rows));
        QuantPair q(name, rows, d);
        const size_t n = q.size(d);
        DeviceBuffer<bf16> ln_p(n), ln_f(n);
        DeviceBuffer<float> res_p(n), res_f(n), rstd_p(static_cast<size_t>(rows)),
            rstd_f(static_cast<size_t>(rows));

        cuda::add(res_p.get(), dres.get(), dbr.get(), rows * d, nullptr);
        cuda::rmsnorm_forward(ln_p.get(), rstd_p.get(), res_p.get(), dw.get(), rows, d, eps, nullptr);
        q.run_plain(ln_p.get());
        QUEST_CUDA_CHECK(cudaMemset(res_f.get(), 0xff, res_f.bytes()));  // NaN: all written?
        ASSERT_TRUE(q.fused.forward_add_rmsnorm(dres.get(), dbr.get(), res_f.get(), dw.get(), eps,
                                                rstd_f.get(), ln_f.get(), q.xq_f.get(),
                                                q.fused_codes(), rows, nullptr));
        cuda_test::sync();
        const QuantOut plain = q.plain_out();
        expect_same(q.fused_out(q.xq_f), plain);
        EXPECT_TRUE(bit_equal(download(res_f), download(res_p), "res_out"));
        EXPECT_TRUE(bit_equal(download(rstd_f), download(rstd_p), "rstd"));
        EXPECT_TRUE(bit_equal(download_bf16(ln_f), download_bf16(ln_p), "ln"));
        EXPECT_EQ(q.fused.last_rows(), rows);

        // In place (res_out = res_in), without ln: the same outputs.
        auto inplace = upload(res);
        ASSERT_TRUE(q.fused.forward_add_rmsnorm(inplace.get(), dbr.get(), inplace.get(), dw.get(),
                                                eps, rstd_f.get(), nullptr, q.xq_f2.get(),
                                                q.fused_codes(), rows, nullptr));
        cuda_test::sync();
        expect_same(q.fused_out(q.xq_f2), plain);
        EXPECT_TRUE(bit_equal(download(inplace), download(res_p), "res_out in place"));
        EXPECT_TRUE(bit_equal(download(rstd_f), download(rstd_p), "rstd in place"));
      }
    }
  }
}

// The plain add + RMSNorm kernel (the unquantized path's fold) against the two ops.
TEST(CudaAddRmsNorm, SameAsAddThenRmsNorm) {
  QUEST_REQUIRE_CUDA();
  constexpr float eps = 1e-5f;
  // d = 100: the scalar path (d % 8 != 0); shift 1: res_in and branch misaligned (the two-kernel
  // fallback; the sums must still be the vector path's).
  for (const int64_t d : {640, 1280, 100}) {
    for (const int64_t shift : {0, 1}) {
      const int64_t rows = 37;
      const size_t n = static_cast<size_t>(rows * d);
      SCOPED_TRACE("d " + std::to_string(d) + " shift " + std::to_string(shift));
      auto res = scaled_rows(rows, d, 61 + uint64_t(d), 1.0);
      auto br = cuda_test::round_bf16(scaled_rows(rows, d, 71 + uint64_t(d), 0.5));
      res.insert(res.begin(), static_cast<size_t>(shift), 0.0f);
      br.insert(br.begin(), static_cast<size_t>(shift), 0.0f);
      auto dres = upload(res);
      auto dbr = upload_bf16(br);
      auto dw = upload(norm_weights(d, 9 + uint64_t(d)));
      const float* rin = dres.get() + shift;
      const bf16* b = dbr.get() + shift;
      DeviceBuffer<float> res_p(n), res_f(n), rstd_p(static_cast<size_t>(rows)),
          rstd_f(static_cast<size_t>(rows));
      DeviceBuffer<bf16> ln_p(n), ln_f(n);
      cuda::add(res_p.get(), rin, b, rows * d, nullptr);
      cuda::rmsnorm_forward(ln_p.get(), rstd_p.get(), res_p.get(), dw.get(), rows, d, eps, nullptr);
      cuda::add_rmsnorm_forward(res_f.get(), ln_f.get(), rstd_f.get(), rin, b, dw.get(), rows, d,
                                eps, nullptr);
      cuda_test::sync();
      EXPECT_TRUE(bit_equal(download(res_f), download(res_p), "res_out"));
      EXPECT_TRUE(bit_equal(download(rstd_f), download(rstd_p), "rstd"));
      EXPECT_TRUE(bit_equal(download_bf16(ln_f), download_bf16(ln_p), "ln"));
      if (shift == 0) {  // in place
        cuda::add_rmsnorm_forward(dres.get(), ln_f.get(), rstd_f.get(), dres.get(), b, dw.get(),
                                  rows, d, eps, nullptr);
        cuda_test::sync();
        EXPECT_TRUE(bit_equal(download(dres), download(res_p), "res_out in place"));
        EXPECT_TRUE(bit_equal(download_bf16(ln_f), download_bf16(ln_p), "ln in place"));
      }
    }
  }
}

TEST(CudaFusedQuantize, Swiglu) {
  QUEST_REQUIRE_CUDA();
  for (const int64_t H : {640, 1280, 1792, 3584}) {
    for (const int64_t rows : {int64_t(37), int64_t(1000)}) {
      const auto a = cuda_test::round_bf16(scaled_rows(rows, H, 21 + uint64_t(H) + uint64_t(rows), 2.0));
      const auto b = cuda_test::round_bf16(scaled_rows(rows, H, 31 + uint64_t(H) + uint64_t(rows), 1.0));
      auto da = upload_bf16(a);
      auto db = upload_bf16(b);
      for (const auto& name : fused_specs()) {
        if (!checked_at(name, rows)) continue;
        SCOPED_TRACE(name + " H " + std::to_string(H) + " rows " + std::to_string(rows));
        QuantPair q(name, rows, H);
        const size_t n = q.size(H);
        DeviceBuffer<bf16> g_p(n), g_f(n);

        cuda::swiglu_forward(g_p.get(), da.get(), db.get(), int64_t(n), nullptr);
        q.run_plain(g_p.get());
        ASSERT_TRUE(q.fused.forward_swiglu(da.get(), db.get(), g_f.get(), q.xq_f.get(),
                                           q.fused_codes(), rows, nullptr));
        cuda_test::sync();
        expect_same(q.fused_out(q.xq_f), q.plain_out());
        EXPECT_TRUE(bit_equal(download_bf16(g_f), download_bf16(g_p), "g"));

        ASSERT_TRUE(q.fused.forward_swiglu(da.get(), db.get(), nullptr, q.xq_f2.get(), nullptr,
                                           rows, nullptr));
        cuda_test::sync();
        EXPECT_TRUE(bit_equal(download_bf16(q.xq_f2), download_bf16(q.xq_p), "xq without g"));
      }
    }
  }
}

TEST(CudaFusedQuantize, NotApplicable) {
  QUEST_REQUIRE_CUDA();
  DeviceQuantizer lsq(QuantSpec::parse("lsq:4"), QuantRole::Input, 8, 640);
  EXPECT_FALSE(lsq.fused_supported());
  DeviceQuantizer fp4(QuantSpec::parse("hadamard-fp4"), QuantRole::Input, 8, 640);
  EXPECT_FALSE(fp4.fused_supported());
  // Misaligned input: nothing launched, false (the caller runs the two ops).
  DeviceQuantizer q(QuantSpec::parse("hadamard-trust:4"), QuantRole::Input, 8, 640);
  DeviceBuffer<bf16> a(8 * 640 + 8), xq(8 * 640);
  EXPECT_FALSE(q.forward_swiglu(a.get() + 1, a.get(), nullptr, xq.get(), nullptr, 4, nullptr));
  EXPECT_EQ(q.last_rows(), 0);
}

// ---- the linear op ----------------------------------------------------------------------------
struct LinearRun {
  std::vector<float> y, dx, dw, res_out;
};

// One op: prepare, forward (fused or plain producer), backward. rmsnorm: the producer is RMSNorm
// over K = in (add_res: with the residual add in front, forward_add_rmsnorm), else SwiGLU.
LinearRun run_linear(const QuantConfig& cfg, bool fused, bool rmsnorm, bool lowbit, int64_t in,
                     int64_t out, int64_t N, bool add_res = false) {
  cuda::Blas blas;
  std::unique_ptr<cuda::LowbitGemm> gemm;
  cuda::CudaLinearOp op(in, out, N, cfg, blas);
  if (lowbit) {
    gemm = std::make_unique<cuda::LowbitGemm>();
    EXPECT_TRUE(op.use_lowbit_product(gemm.get()));
  }
  op.set_fused_producers(fused);
  Rng rng_w(3), rng_dy(4);
  const auto w = cuda_test::randn(rng_w, static_cast<size_t>(out * in), 0.05);
  auto dwm = upload(w);
  op.prepare_weight(dwm.get(), nullptr);
  const auto dy = cuda_test::randn(rng_dy, static_cast<size_t>(N * out), 1.0, true);
  auto ddy = upload_bf16(dy);
  DeviceBuffer<bf16> y(static_cast<size_t>(N * out)), dx(static_cast<size_t>(N * in)), xin(static_cast<size_t>(N * in));
  DeviceBuffer<float> dw(static_cast<size_t>(out * in));
  QUEST_CUDA_CHECK(cudaMemset(dw.get(), 0, dw.bytes()));
  std::vector<float> res_outs;
  if (rmsnorm) {
    const auto res = scaled_rows(N, in, 7, 1.0);
    std::vector<float> nw(static_cast<size_t>(in));
    Rng rng(8);
    for (auto& v : nw) v = float(1.0 + 0.2 * rng.normal());
    auto dres = upload(res);
    auto dnw = upload(nw);
    DeviceBuffer<float> rstd(static_cast<size_t>(N));
    if (add_res) {
      const auto br = cuda_test::round_bf16(scaled_rows(N, in, 12, 0.5));
      auto dbr = upload_bf16(br);
      DeviceBuffer<float> res_out(static_cast<size_t>(N * in));
      op.forward_add_rmsnorm(dres.get(), dbr.get(), res_out.get(), dnw.get(), 1e-5f, rstd.get(),
                             xin.get(), false, y.get(), N, nullptr);
      cuda_test::sync();
      res_outs = download(res_out);
    } else {
      op.forward_rmsnorm(dres.get(), dnw.get(), 1e-5f, rstd.get(), xin.get(), false, y.get(), N,
                         nullptr);
    }
    cuda_test::sync();
  } else {
    const auto a = scaled_rows(N, in, 9, 2.0), b = scaled_rows(N, in, 10, 1.0);
    auto da = upload_bf16(a);
    auto db = upload_bf16(b);
    op.forward_swiglu(da.get(), db.get(), xin.get(), false, y.get(), N, nullptr);
    cuda_test::sync();
  }
  op.backward(ddy.get(), dx.get(), dw.get(), N, nullptr);
  cuda_test::sync();
  return {download_bf16(y), download_bf16(dx), download(dw), res_outs};
}

TEST(CudaFusedLinear, SameAsPlainOps) {
  QUEST_REQUIRE_CUDA();
  for (const char* c : {"w=quest:4,a=quest:4", "w=quest:1,a=quest:1", "w=quest:8,a=quest:8",
                        "w=ste:4,a=trust:3", ""})
    for (const bool rms : {true, false})
      for (const bool lowbit : {false, true}) {
        const QuantConfig cfg = *c ? QuantConfig::parse(c) : QuantConfig::none();
        if (lowbit && !(cfg.input.bits >= 1 && cfg.input.bits <= 7 && cfg.uses_hadamard()))
          continue;
        SCOPED_TRACE(std::string(c) + (rms ? " rmsnorm" : " swiglu") + (lowbit ? " int8" : ""));
        const int64_t in = rms ? 640 : 1792, out = rms ? 384 : 640, N = 203;
        const LinearRun f = run_linear(cfg, true, rms, lowbit, in, out, N);
        const LinearRun p = run_linear(cfg, false, rms, lowbit, in, out, N);
        EXPECT_TRUE(bit_equal(f.y, p.y, "y"));
        EXPECT_TRUE(bit_equal(f.dx, p.dx, "dx"));
        EXPECT_TRUE(bit_equal(f.dw, p.dw, "dw"));
      }
}

// forward_add_rmsnorm: fused (the quantizer's kernel, or the plain add_rmsnorm kernel for the
// unquantized and non-fusable configs) against add + rmsnorm_forward + forward().
TEST(CudaFusedLinear, AddRmsNormSameAsPlainOps) {
  QUEST_REQUIRE_CUDA();
  for (const char* c : {"w=quest:4,a=quest:4", "w=quest:8,a=quest:8", "w=ste:4,a=trust:3",
                        "w=lsq:4,a=lsq:4", ""})
    for (const bool lowbit : {false, true}) {
      const QuantConfig cfg = *c ? QuantConfig::parse(c) : QuantConfig::none();
      if (lowbit && !(cfg.input.bits >= 1 && cfg.input.bits <= 7 && cfg.uses_hadamard())) continue;
      SCOPED_TRACE(std::string(c) + (lowbit ? " int8" : ""));
      for (const int64_t in : {640, 1280}) {
        const int64_t out = 384, N = 203;
        const LinearRun f = run_linear(cfg, true, true, lowbit, in, out, N, true);
        const LinearRun p = run_linear(cfg, false, true, lowbit, in, out, N, true);
        EXPECT_TRUE(bit_equal(f.res_out, p.res_out, "res_out"));
        EXPECT_TRUE(bit_equal(f.y, p.y, "y"));
        EXPECT_TRUE(bit_equal(f.dx, p.dx, "dx"));
        EXPECT_TRUE(bit_equal(f.dw, p.dw, "dw"));
      }
    }
}

// w1 fused without writing ln, w2 taking w1's quantized input: w2's y and backward as when both
// quantize the written ln themselves.
TEST(CudaFusedLinear, SharedInputWithoutLn) {
  QUEST_REQUIRE_CUDA();
  const QuantConfig cfg = QuantConfig::parse("w=quest:4,a=quest:4");
  constexpr int64_t d = 640, H = 384, N = 130;
  const auto res = scaled_rows(N, d, 17, 1.0);
  std::vector<float> nw(static_cast<size_t>(d), 1.25f);
  auto dres = upload(res);
  auto dnw = upload(nw);
  Rng r1(1), r2(2), r4(4);
  const auto w1 = cuda_test::randn(r1, static_cast<size_t>(H * d), 0.05);
  const auto w2 = cuda_test::randn(r2, static_cast<size_t>(H * d), 0.05);
  auto dw1 = upload(w1);
  auto dw2 = upload(w2);
  const auto dy = cuda_test::randn(r4, static_cast<size_t>(N * H), 1.0, true);
  auto ddy = upload_bf16(dy);
  std::vector<float> ys[2], dxs[2];
  for (const bool fused : {true, false}) {
    cuda::Blas blas;
    cuda::LowbitGemm gemm;
    cuda::CudaLinearOp op1(d, H, N, cfg, blas), op2(d, H, N, cfg, blas);
    op1.use_lowbit_product(&gemm);
    op2.use_lowbit_product(&gemm);
    if (fused) ASSERT_TRUE(op2.share_input_quantization(op1));
    EXPECT_EQ(op2.shares_input_with(op1), fused);
    op1.set_fused_producers(fused);
    op1.prepare_weight(dw1.get(), nullptr);
    op2.prepare_weight(dw2.get(), nullptr);
    DeviceBuffer<bf16> ln(static_cast<size_t>(N * d)), y1(static_cast<size_t>(N * H)), y2(static_cast<size_t>(N * H)), dx(static_cast<size_t>(N * d));
    DeviceBuffer<float> rstd(static_cast<size_t>(N)), gw(static_cast<size_t>(H * d));
    QUEST_CUDA_CHECK(cudaMemset(ln.get(), 0xff, ln.bytes()));  // NaN: must not be read when shared
    QUEST_CUDA_CHECK(cudaMemset(gw.get(), 0, gw.bytes()));
    op1.forward_rmsnorm(dres.get(), dnw.get(), 1e-5f, rstd.get(), ln.get(), !fused, y1.get(), N,
                        nullptr);
    op2.forward(ln.get(), y2.get(), N, nullptr);
    op2.backward(ddy.get(), dx.get(), gw.get(), N, nullptr);
    cuda_test::sync();
    ys[fused] = download_bf16(y2);
    dxs[fused] = download_bf16(dx);
  }
  EXPECT_TRUE(bit_equal(ys[1], ys[0], "w2 y"));
  EXPECT_TRUE(bit_equal(dxs[1], dxs[0], "w2 dx"));
}

}  // namespace
}  // namespace quest
