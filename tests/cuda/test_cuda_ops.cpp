// The CUDA ops (src/ops/cuda_ops.h) against the CPU reference ops (src/ops/cpu_ops.h) and
// quest::AdamW, on random non-zero inputs at the model's shapes (N = 2 x 512 rows, d = 640,
// H = 1792, Vp = 50304, 5 heads of 128), plus small odd shapes that take the scalar (non-vector)
// paths. Every test skips when no CUDA device is present.
//
// Tolerances, stated as the error expected: the CPU gets the SAME bf16-rounded inputs as the GPU,
// so a bf16 output may differ from the CPU's fp32 value by its own rounding, at most kBf16Rtol
// (2^-8) relatively, plus fp32 arithmetic noise (orders of magnitude smaller, covered by an atol of
// ~1e-6..1e-5 of the output's largest magnitude). fp32 outputs (rstd, losses, parameter gradients)
// only carry fp32 noise: rtol ~1e-5. Copies and the deterministic scatter-add are bit-exact.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <iostream>
#include <numeric>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "cuda/cuda_test_util.h"
#include "ops/cpu_ops.h"
#include "ops/cuda_ops.h"
#include "train/adamw.h"

namespace quest {
namespace cuda {
// Internal entry points of src/ops/cuda/rope.cu (not in cuda_ops.h): the per-pair kernel (the
// bitwise reference of the table path) and the table path with a given rows-per-block.
void rope_apply_reference(bf16* qkv, int64_t B, int64_t T, int64_t n_head, int64_t head_dim,
                          float theta, int64_t pos0, float sign, cudaStream_t stream);
void rope_apply_rows(bf16* qkv, int64_t B, int64_t T, int64_t n_head, int64_t head_dim, float theta,
                     int64_t pos0, float sign, int rows, cudaStream_t stream);
}  // namespace cuda

namespace {

using namespace cuda_test;
namespace gpu = quest::cuda;

constexpr int64_t kB = 2, kT = 512, kN = kB * kT, kD = 640, kH = 1792;
constexpr int64_t kV = 50257, kVp = 50304, kHeads = 5, kHeadDim = 128;
constexpr cudaStream_t kStream = nullptr;

// atol as a fraction of the expected values' largest magnitude.
template <class T>
double rel_atol(const std::vector<T>& expected, double fraction) {
  return fraction * max_abs(expected);
}

// ---- conversions and elementwise ---------------------------------------------------------------

// Random magnitudes over many binades, exact ties (low half 0x8000, odd and even), infinities and
// denormals: to_bf16 must round to nearest even like the host conversion, bit for bit.
std::vector<float> conversion_inputs(Rng& rng, size_t n) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i)
    v[i] = float(rng.normal() * std::ldexp(1.0, int(rng.below(60)) - 30));
  const float specials[] = {INFINITY, -INFINITY, 1e-40f, -3e-39f, 0.0f, -0.0f,
                            std::bit_cast<float>(0x3f808000u), std::bit_cast<float>(0x3f818000u),
                            std::bit_cast<float>(0x3f808001u), std::bit_cast<float>(0x7f7fffffu)};
  for (size_t k = 0; k < std::size(specials) && k < n; ++k) v[k * 7 % n] = specials[k];
  return v;
}

TEST(CudaElementwise, ToBf16RoundsToNearestEven) {
  QUEST_REQUIRE_CUDA();
  Rng rng(1);
  const size_t n = 1000003;  // vector body and a tail
  const auto x = conversion_inputs(rng, n);
  auto dx = upload(x);
  DeviceBuffer<bf16> out(n);
  out.fill_nan();
  gpu::to_bf16(out, dx, int64_t(n), kStream);
  sync();
  EXPECT_TRUE(bit_equal(download_bf16(out), round_bf16(x), "aligned"));
  // Offset by one element: the scalar path.
  out.fill_nan();
  gpu::to_bf16(out.get() + 1, dx.get() + 1, int64_t(n - 1), kStream);
  sync();
  auto got = download_bf16(out);
  got.erase(got.begin());
  EXPECT_TRUE(bit_equal(got, round_bf16(std::vector<float>(x.begin() + 1, x.end())), "unaligned"));
}

TEST(CudaElementwise, ToF32IsExact) {
  QUEST_REQUIRE_CUDA();
  Rng rng(2);
  const size_t n = 65541;
  const auto x = round_bf16(conversion_inputs(rng, n));
  auto dx = upload_bf16(x);
  DeviceBuffer<float> out(n);
  out.fill_nan();
  gpu::to_f32(out, dx, int64_t(n), kStream);
  sync();
  EXPECT_TRUE(bit_equal(download(out), x, "aligned"));
  out.fill_nan();
  gpu::to_f32(out.get() + 1, dx.get() + 1, int64_t(n - 1), kStream);
  sync();
  auto got = download(out);
  EXPECT_TRUE(bit_equal(std::vector<float>(got.begin() + 1, got.end()),
                        std::vector<float>(x.begin() + 1, x.end()), "unaligned"));
}

// out = bf16(float(a) + float(b)): one fp32 addition then one rounding, computed the same way here.
TEST(CudaElementwise, AddRoundsTheFp32SumOnceAndMayAlias) {
  QUEST_REQUIRE_CUDA();
  Rng rng(3);
  for (const size_t n : {size_t(kN * kD), size_t(1001)}) {
    const auto a = randn(rng, n, 1.0, true), b = randn(rng, n, 0.3, true);
    std::vector<float> expected(n);
    for (size_t i = 0; i < n; ++i) expected[i] = round_bf16(a[i] + b[i]);
    auto da = upload_bf16(a), db = upload_bf16(b);
    DeviceBuffer<bf16> out(n);
    out.fill_nan();
    gpu::add(out, da, db, int64_t(n), kStream);
    sync();
    EXPECT_TRUE(bit_equal(download_bf16(out), expected, "out of place, n=" + std::to_string(n)));
    gpu::add(da, da, db, int64_t(n), kStream);  // in place: out == a
    sync();
    EXPECT_TRUE(bit_equal(download_bf16(da), expected, "in place, n=" + std::to_string(n)));
  }
}

// The residual add: fp32 stream + bf16 branch output, one fp32 addition (exact comparison).
TEST(CudaElementwise, ResidualAddIsOneFp32Addition) {
  QUEST_REQUIRE_CUDA();
  Rng rng(33);
  for (const size_t n : {size_t(kN * kD), size_t(1001)}) {
    const auto a = randn(rng, n, 1.0), b = randn(rng, n, 0.3, true);
    std::vector<float> expected(n);
    for (size_t i = 0; i < n; ++i) expected[i] = a[i] + b[i];
    auto da = upload(a);
    auto db = upload_bf16(b);
    DeviceBuffer<float> out(n);
    out.fill_nan();
    gpu::add(out.get(), da.get(), db.get(), int64_t(n), kStream);
    sync();
    EXPECT_TRUE(bit_equal(download(out), expected, "out of place, n=" + std::to_string(n)));
    gpu::add(da.get(), da.get(), db.get(), int64_t(n), kStream);  // in place: out == a
    sync();
    EXPECT_TRUE(bit_equal(download(da), expected, "in place, n=" + std::to_string(n)));
  }
}

// ---- embedding ---------------------------------------------------------------------------------

TEST(CudaEmbedding, ForwardCopiesRows) {
  QUEST_REQUIRE_CUDA();
  Rng rng(4);
  for (const auto [N, d] : {std::pair<int64_t, int64_t>{kN, kD}, {300, 37}}) {
    const int64_t rows = 1000;
    const auto table = randn(rng, rows * d, 0.02);
    const auto tokens = rand_ints(rng, N, 0, int32_t(rows));
    std::vector<float> expected(N * d);
    cpu::embedding_forward(expected.data(), tokens.data(), table.data(), N, d);
    auto dtable = upload(table);
    auto dtok = upload(tokens);
    DeviceBuffer<float> out(N * d);
    out.fill_nan();
    gpu::embedding_forward(out, dtok, dtable, N, d, kStream);
    sync();
    EXPECT_TRUE(bit_equal(download(out), expected, "d=" + std::to_string(d)));
  }
}

// Many repeated tokens (64 distinct ids over 1024 rows: long runs of one token after the sort):
// the deterministic scatter-add sums in the CPU's row order, so the result is bitwise the CPU's,
// and accumulates onto a non-zero table.
TEST(CudaEmbedding, BackwardMatchesCpuBitwise) {
  QUEST_REQUIRE_CUDA();
  Rng rng(5);
  for (const auto [N, d] : {std::pair<int64_t, int64_t>{kN, kD}, {300, 37}}) {
    const int64_t rows = 100;
    auto dtable = randn(rng, rows * d);
    const auto dout = randn(rng, N * d, 1.0);
    const auto tokens = rand_ints(rng, N, 0, 64);
    auto g_dtable = upload(dtable);
    auto g_dout = upload(dout);
    auto g_tok = upload(tokens);
    DeviceBuffer<float> scratch((gpu::embedding_backward_scratch_bytes(N) + 3) / 4);
    scratch.fill_nan();
    gpu::embedding_backward(g_dtable, g_dout, g_tok, N, d, scratch, kStream);
    sync();
    cpu::embedding_backward(dtable.data(), dout.data(), tokens.data(), N, d);
    EXPECT_TRUE(bit_equal(download(g_dtable), dtable, "d=" + std::to_string(d)));
  }
}

// Ids cannot be checked on the host: a negative id gives a NaN row forward and is skipped backward.
TEST(CudaEmbedding, NegativeIdsGiveNanRowsAndNoGradient) {
  QUEST_REQUIRE_CUDA();
  Rng rng(6);
  const int64_t N = 4, d = 16, rows = 3;
  const auto table = randn(rng, rows * d, 1.0);
  const std::vector<int32_t> tokens = {1, -1, 2, 1};
  auto g_table = upload(table);
  auto g_tok = upload(tokens);
  DeviceBuffer<float> out(N * d);
  out.zero();
  gpu::embedding_forward(out, g_tok, g_table, N, d, kStream);
  const auto dout = randn(rng, N * d, 1.0);
  auto g_dout = upload(dout);
  DeviceBuffer<float> dtable(rows * d);
  dtable.zero();
  DeviceBuffer<float> scratch((gpu::embedding_backward_scratch_bytes(N) + 3) / 4);
  gpu::embedding_backward(dtable, g_dout, g_tok, N, d, scratch, kStream);
  sync();
  const auto o = download(out), dt = download(dtable);
  for (int64_t j = 0; j < d; ++j) {
    EXPECT_TRUE(std::isnan(o[1 * d + j])) << j;
    EXPECT_EQ(o[0 * d + j], table[1 * d + j]) << j;
    EXPECT_EQ(dt[0 * d + j], 0.0f) << j;                           // row 0: no token
    EXPECT_EQ(dt[1 * d + j], dout[0 * d + j] + dout[3 * d + j]) << j;  // rows 0 and 3
    EXPECT_EQ(dt[2 * d + j], dout[2 * d + j]) << j;
  }
}

// ---- RMSNorm -----------------------------------------------------------------------------------

TEST(CudaRmsNorm, ForwardMatchesCpu) {
  QUEST_REQUIRE_CUDA();
  Rng rng(7);
  const float eps = 1e-5f;
  // Rows held in registers (16-byte groups: 2, 3, 5 or 8 a lane at d = 64, 640, 1280, 2048),
  // re-read (d = 2560: 10 groups a lane) and single elements (d = 37).
  for (const auto [N, d] : {std::pair<int64_t, int64_t>{kN, kD}, {13, 37}, {40, 64}, {300, 1280}, {70, 2048}, {9, 2560}}) {
    const auto x = randn(rng, N * d, 1.5);
    auto w = randn(rng, d, 0.2);
    for (auto& v : w) v = 1.0f + v;
    std::vector<float> out(N * d), rstd(N);
    cpu::rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), N, d, eps);
    auto gx = upload(x), gw = upload(w);
    DeviceBuffer<bf16> gout(N * d);
    DeviceBuffer<float> grstd(N);
    gout.fill_nan(), grstd.fill_nan();
    gpu::rmsnorm_forward(gout, grstd, gx, gw, N, d, eps, kStream);
    sync();
    const std::string tag = " d=" + std::to_string(d);
    EXPECT_TRUE(all_close(download_bf16(gout), out, rel_atol(out, 1e-6), kBf16Rtol, "out" + tag));
    EXPECT_TRUE(all_close(download(grstd), rstd, 0.0, 1e-5, "rstd" + tag));
  }
}

// dx (fp32) and dw accumulate onto non-zero values and dx_copy is bf16(dx); the scratch starts as
// NaN (every partial must be written before it is read).
TEST(CudaRmsNorm, BackwardMatchesCpu) {
  QUEST_REQUIRE_CUDA();
  Rng rng(8);
  const float eps = 1e-5f;
  // The fused backward (d % 8 == 0) at 30M/200M/800M widths, with a last segment of < 64 rows;
  // the separate passes for d = 37.
  for (const auto [N, d] : {std::pair<int64_t, int64_t>{kN, kD}, {13, 37}, {40, 64}, {300, 1280}, {70, 2048}}) {
    const auto x = randn(rng, N * d, 1.5), dout = randn(rng, N * d, 1.0, true);
    auto w = randn(rng, d, 0.2);
    for (auto& v : w) v = 1.0f + v;
    auto dx = randn(rng, N * d, 0.5);
    auto dw = randn(rng, d, 3.0);
    std::vector<float> out(N * d), rstd(N);
    cpu::rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), N, d, eps);

    auto gx = upload(x), gw = upload(w), gdx = upload(dx);
    auto gdout = upload_bf16(dout);
    auto grstd = upload(rstd), gdw = upload(dw);
    DeviceBuffer<float> scratch(size_t(gpu::rmsnorm_backward_scratch(N, d)));
    DeviceBuffer<bf16> gcopy(N * d);
    scratch.fill_nan(), gcopy.fill_nan();
    gpu::rmsnorm_backward(gdx, gcopy, gdw, gdout, gx, gw, grstd, N, d, scratch, kStream);
    sync();
    cpu::rmsnorm_backward(dx.data(), dw.data(), dout.data(), x.data(), w.data(), rstd.data(), N, d);
    const std::string tag = " N=" + std::to_string(N) + " d=" + std::to_string(d);
    const auto got = download(gdx);
    EXPECT_TRUE(all_close(got, dx, rel_atol(dx, 1e-6), 1e-5, "dx" + tag));
    std::vector<float> rounded(got.size());
    for (size_t i = 0; i < got.size(); ++i) rounded[i] = round_bf16(got[i]);
    EXPECT_TRUE(bit_equal(download_bf16(gcopy), rounded, "dx_copy" + tag));
    EXPECT_TRUE(all_close(download(gdw), dw, rel_atol(dw, 1e-5), 1e-5, "dw" + tag));
  }
}

// ---- RoPE --------------------------------------------------------------------------------------

struct RopeCase {
  int64_t B, T, H, HD, pos0;
};

// Forward and backward against the CPU; the v third of each row must come back bit-identical.
TEST(CudaRope, ForwardAndBackwardMatchCpu) {
  QUEST_REQUIRE_CUDA();
  Rng rng(9);
  const float theta = 10000.0f;
  for (const RopeCase c : {RopeCase{kB, kT, kHeads, kHeadDim, 0}, RopeCase{1, 64, kHeads, kHeadDim, 3000},
                           RopeCase{2, 5, 3, 6, 7}}) {
    const int64_t C = c.H * c.HD, n = c.B * c.T * 3 * C;
    const std::string tag = " B=" + std::to_string(c.B) + " T=" + std::to_string(c.T) +
                            " head_dim=" + std::to_string(c.HD) + " pos0=" + std::to_string(c.pos0);
    for (const bool backward : {false, true}) {
      const auto x = randn(rng, n, 1.0, true);
      auto expected = x;
      auto g = upload_bf16(x);
      if (backward) {
        cpu::rope_backward(expected.data(), c.B, c.T, c.H, c.HD, theta, c.pos0);
        gpu::rope_backward(g, c.B, c.T, c.H, c.HD, theta, c.pos0, kStream);
      } else {
        cpu::rope_forward(expected.data(), c.B, c.T, c.H, c.HD, theta, c.pos0);
        gpu::rope_forward(g, c.B, c.T, c.H, c.HD, theta, c.pos0, kStream);
      }
      sync();
      const auto got = download_bf16(g);
      const std::string what = (backward ? "rope_backward" : "rope_forward") + tag;
      EXPECT_TRUE(all_close(got, expected, rel_atol(x, 1e-6), kBf16Rtol, what));
      std::vector<float> v_got, v_in;
      for (int64_t row = 0; row < c.B * c.T; ++row)
        for (int64_t j = 2 * C; j < 3 * C; ++j)
          v_got.push_back(got[row * 3 * C + j]), v_in.push_back(x[row * 3 * C + j]);
      EXPECT_TRUE(bit_equal(v_got, v_in, what + " (v untouched)"));
    }
  }
}

// The table path (cos/sin computed once per head_dim, theta into a device table) against the
// per-pair kernel it replaced, bit for bit on the whole buffer (v and the element before an offset
// start included): odd T and B*T (partial row blocks), pos0 > 0 (a table grown past its first
// size), head_dim 64 and 128, and the pair-wise path (VEC = 2): an unaligned qkv, C % 8 != 0, and
// head_dim % 8 != 0 with C % 8 == 0. Positions past the table's size limit take the per-pair path.
TEST(CudaRope, TableMatchesPerPairKernelBitwise) {
  QUEST_REQUIRE_CUDA();
  Rng rng(21);
  struct Case {
    int64_t B, T, H, HD, pos0, offset;
    float theta;
    int rows;
  };
  const Case cases[] = {{3, 37, 5, 128, 0, 0, 10000.0f, 4},   {2, 37, 10, 64, 1000, 0, 10000.0f, 4},
                        {1, 77, 4, 128, 30001, 0, 10000.0f, 4}, {1, 5, 2, 128, 0, 0, 500000.0f, 4},
                        {2, 19, 3, 64, 0, 0, 10000.0f, 1},     {2, 19, 3, 64, 5, 0, 10000.0f, 2},
                        {4, 33, 5, 128, 0, 0, 10000.0f, 8},    {2, 37, 5, 128, 3, 1, 10000.0f, 2},
                        {2, 13, 3, 6, 7, 0, 10000.0f, 4},      {3, 11, 2, 12, 40, 0, 10000.0f, 4},
                        {1, 3, 2, 64, int64_t(1) << 24, 0, 10000.0f, 4}};
  for (const Case& c : cases) {
    const int64_t C = c.H * c.HD, n = c.offset + c.B * c.T * 3 * C;
    for (const float sign : {1.0f, -1.0f}) {
      const std::string tag = " B=" + std::to_string(c.B) + " T=" + std::to_string(c.T) + " H=" +
                              std::to_string(c.H) + " head_dim=" + std::to_string(c.HD) + " pos0=" +
                              std::to_string(c.pos0) + " offset=" + std::to_string(c.offset) +
                              " rows=" + std::to_string(c.rows) + " sign=" + std::to_string(int(sign));
      const auto x = randn(rng, n, 4.0, true);
      auto want = upload_bf16(x), got = upload_bf16(x);
      gpu::rope_apply_reference(want.get() + c.offset, c.B, c.T, c.H, c.HD, c.theta, c.pos0, sign, kStream);
      gpu::rope_apply_rows(got.get() + c.offset, c.B, c.T, c.H, c.HD, c.theta, c.pos0, sign, c.rows, kStream);
      sync();
      EXPECT_TRUE(bit_equal(download_bf16(got), download_bf16(want), "rope table vs per-pair" + tag));
    }
  }
  // The public entry points take the same path.
  const int64_t B = 2, T = 37, H = 5, HD = 128, n = B * T * 3 * H * HD;
  const auto x = randn(rng, n, 1.0, true);
  for (const bool backward : {false, true}) {
    auto want = upload_bf16(x), got = upload_bf16(x);
    gpu::rope_apply_reference(want, B, T, H, HD, 10000.0f, 11, backward ? -1.0f : 1.0f, kStream);
    if (backward)
      gpu::rope_backward(got, B, T, H, HD, 10000.0f, 11, kStream);
    else
      gpu::rope_forward(got, B, T, H, HD, 10000.0f, 11, kStream);
    sync();
    EXPECT_TRUE(bit_equal(download_bf16(got), download_bf16(want), backward ? "rope_backward" : "rope_forward"));
  }
}

// ---- SwiGLU ------------------------------------------------------------------------------------

// a spans the sigmoid's saturation (including |a| ~ 100, where e^-a overflows); the small odd case
// runs unaligned (scalar path).
TEST(CudaSwiglu, ForwardAndBackwardMatchCpu) {
  QUEST_REQUIRE_CUDA();
  Rng rng(10);
  for (const auto [n, offset] : {std::pair<int64_t, int64_t>{kN * kH, 0}, {1001, 1}}) {
    auto a = randn(rng, n, 3.0);
    a[0] = 100.0f, a[1] = -100.0f, a[2] = 30.0f, a[3] = -30.0f;
    a = round_bf16(a);
    const auto b = randn(rng, n, 1.0, true), dout = randn(rng, n, 1.0, true);
    std::vector<float> out(n), da(n), db(n);
    cpu::swiglu_forward(out.data(), a.data(), b.data(), n);
    cpu::swiglu_backward(da.data(), db.data(), dout.data(), a.data(), b.data(), n);

    // Device copies at `offset` elements into their buffers.
    auto place = [&](const std::vector<float>& v) {
      std::vector<float> p(size_t(n + offset), 0.0f);
      std::copy(v.begin(), v.end(), p.begin() + offset);
      return upload_bf16(p);
    };
    auto ga = place(a), gb = place(b), gdout = place(dout);
    DeviceBuffer<bf16> gout(n + offset), gda(n + offset), gdb(n + offset);
    gout.fill_nan(), gda.fill_nan(), gdb.fill_nan();
    gpu::swiglu_forward(gout.get() + offset, ga.get() + offset, gb.get() + offset, n, kStream);
    gpu::swiglu_backward(gda.get() + offset, gdb.get() + offset, gdout.get() + offset,
                         ga.get() + offset, gb.get() + offset, n, kStream);
    sync();
    const std::string tag = " n=" + std::to_string(n);
    EXPECT_TRUE(all_close(download_bf16(gout.get() + offset, n), out, rel_atol(out, 1e-6),
                          kBf16Rtol, "out" + tag));
    EXPECT_TRUE(all_close(download_bf16(gda.get() + offset, n), da, rel_atol(da, 1e-6), kBf16Rtol,
                          "da" + tag));
    EXPECT_TRUE(all_close(download_bf16(gdb.get() + offset, n), db, rel_atol(db, 1e-6), kBf16Rtol,
                          "db" + tag));
  }
}

// The contract lets the gradients overwrite dout (da aliasing dout).
TEST(CudaSwiglu, BackwardMayOverwriteDout) {
  QUEST_REQUIRE_CUDA();
  Rng rng(11);
  const int64_t n = 4096 + 3;
  const auto a = randn(rng, n, 2.0, true), b = randn(rng, n, 1.0, true),
             dout = randn(rng, n, 1.0, true);
  std::vector<float> da(n), db(n);
  cpu::swiglu_backward(da.data(), db.data(), dout.data(), a.data(), b.data(), n);
  auto ga = upload_bf16(a), gb = upload_bf16(b), gdout = upload_bf16(dout);
  DeviceBuffer<bf16> gdb(n);
  gpu::swiglu_backward(gdout, gdb, gdout, ga, gb, n, kStream);
  sync();
  EXPECT_TRUE(all_close(download_bf16(gdout), da, rel_atol(da, 1e-6), kBf16Rtol, "da (in dout)"));
  EXPECT_TRUE(all_close(download_bf16(gdb), db, rel_atol(db, 1e-6), kBf16Rtol, "db"));
}

// ---- cross-entropy -----------------------------------------------------------------------------

struct CeCase {
  int64_t N, V, Vp;
  bool in_place;
};

// Padding columns hold garbage (large values) that must not enter the softmax and must come back
// as exact zeros in dlogits. The cases cover the three kernels: rows staged in shared memory (Vp
// % 8 == 0, the GPT-2 vocabulary), 16-byte groups read twice from memory (a row of 240 KB, over
// any GPU's shared memory per block) and single elements (Vp % 8 != 0). Losses are fp32 (rtol 1e-5: a 50k-term fp32 sum); dlogits carry one
// bf16 rounding (they are ~grad_scale / V, far above any denormal, so atol is ~0).
TEST(CudaCrossEntropy, MatchesCpu) {
  QUEST_REQUIRE_CUDA();
  Rng rng(12);
  for (const CeCase c : {CeCase{kN, kV, kVp, true}, CeCase{kN, kV, kVp, false},
                         CeCase{7, 1000, 1003, false}, CeCase{5, 1000, 1003, true},
                         CeCase{3, 119997, 120000, true}}) {
    auto logits = randn(rng, c.N * c.Vp, 2.0);
    for (int64_t n = 0; n < c.N; ++n)
      for (int64_t j = c.V; j < c.Vp; ++j) logits[n * c.Vp + j] = 50.0f;
    logits = round_bf16(logits);
    const auto targets = rand_ints(rng, c.N, 0, int32_t(c.V));
    const float grad_scale = 1.0f / float(c.N);
    std::vector<float> dlogits(c.N * c.Vp), losses(c.N);
    const double total = cpu::cross_entropy(dlogits.data(), losses.data(), logits.data(),
                                            targets.data(), c.N, c.V, c.Vp, grad_scale);

    auto glogits = upload_bf16(logits);
    auto gtargets = upload(targets);
    DeviceBuffer<float> glosses(c.N);
    DeviceBuffer<bf16> gd(c.in_place ? 0 : size_t(c.N * c.Vp));
    glosses.fill_nan(), gd.fill_nan();
    bf16* gdl = c.in_place ? glogits.get() : gd.get();
    gpu::cross_entropy(gdl, glosses, glogits, gtargets, c.N, c.V, c.Vp, grad_scale, kStream);
    sync();
    const std::string tag = " N=" + std::to_string(c.N) + " Vp=" + std::to_string(c.Vp) +
                            (c.in_place ? " in place" : "");
    const auto got_losses = download(glosses);
    EXPECT_TRUE(all_close(got_losses, losses, 1e-5, 1e-5, "losses" + tag));
    EXPECT_NEAR(std::accumulate(got_losses.begin(), got_losses.end(), 0.0), total,
                1e-5 * std::fabs(total))
        << "sum of losses" << tag;
    const auto got = download_bf16(gdl, size_t(c.N * c.Vp));
    EXPECT_TRUE(all_close(got, dlogits, 1e-12, kBf16Rtol + 1e-5, "dlogits" + tag));
    int64_t nonzero_padding = 0;
    for (int64_t n = 0; n < c.N; ++n)
      for (int64_t j = c.V; j < c.Vp; ++j) nonzero_padding += got[n * c.Vp + j] != 0.0f;
    EXPECT_EQ(nonzero_padding, 0) << "padding columns must be exactly 0" << tag;
  }
}

TEST(CudaCrossEntropy, LossesOnlyAndBadTargets) {
  QUEST_REQUIRE_CUDA();
  Rng rng(13);
  const int64_t N = 3, V = 100, Vp = 104;
  const auto logits = randn(rng, N * Vp, 1.0, true);
  const std::vector<int32_t> targets = {5, int32_t(V), 7};  // row 1: outside the vocabulary
  auto glogits = upload_bf16(logits);
  auto gtargets = upload(targets);
  DeviceBuffer<float> glosses(N);
  gpu::cross_entropy(nullptr, glosses, glogits, gtargets, N, V, Vp, 1.0f, kStream);  // no grads
  sync();
  const auto l = download(glosses);
  std::vector<float> ref(N);
  const std::vector<int32_t> ok_targets = {5, 0, 7};
  cpu::cross_entropy(nullptr, ref.data(), logits.data(), ok_targets.data(), N, V, Vp, 1.0f);
  EXPECT_NEAR(l[0], ref[0], 1e-5);
  EXPECT_TRUE(std::isnan(l[1])) << "a bad target gives a NaN loss";
  EXPECT_NEAR(l[2], ref[2], 1e-5);
  EXPECT_EQ(download_bf16(glogits), logits) << "logits untouched without dlogits";
  gpu::cross_entropy(glogits, glosses, glogits, gtargets, N, V, Vp, 1.0f, kStream);
  sync();
  const auto g = download_bf16(glogits);
  for (int64_t j = 0; j < Vp; ++j) EXPECT_TRUE(std::isnan(g[Vp + j])) << "bad row, column " << j;
  EXPECT_FALSE(std::isnan(g[0]));
}

// ---- matrix products ---------------------------------------------------------------------------

struct MatmulCase {
  int64_t N, K, M;
};

// forward, dx and dw (dw accumulated twice onto a non-zero start, as over two micro-batches)
// against cpu::matmul_forward / matmul_backward in fp32 on the same bf16 values. Outputs ~N(0,1)
// (w ~ N(0, 1/K)). Both sides accumulate in fp32 (the tensor cores' adder may truncate): that
// noise, ~sqrt(k) 2^-24 of the partial sums over the inner dimension k (up to 50304 for the head's
// dx), stays far below the atol of 1e-4 of the largest output; a wrong mapping errs by O(1).
void check_matmul(gpu::Blas& blas, const MatmulCase& c, Rng& rng, int64_t offset = 0) {
  const auto [N, K, M] = c;
  const std::string tag =
      " N=" + std::to_string(N) + " K=" + std::to_string(K) + " M=" + std::to_string(M) +
      (offset ? " offset " + std::to_string(offset) : "");
  const auto x = randn(rng, N * K, 1.0, true), w = randn(rng, M * K, 1.0 / std::sqrt(K), true),
             dout = randn(rng, N * M, 1.0, true);
  auto dw = randn(rng, M * K, 10.0);
  std::vector<float> out(N * M), dx(N * K);
  cpu::matmul_forward(out.data(), x.data(), w.data(), N, K, M);

  // Buffers `offset` elements into their allocations (other pointer alignments: other plans).
  auto place = [&](const std::vector<float>& v) {
    std::vector<float> p(size_t(v.size() + offset), 0.0f);
    std::copy(v.begin(), v.end(), p.begin() + offset);
    return p;
  };
  auto gx = upload_bf16(place(x)), gw = upload_bf16(place(w)), gdout = upload_bf16(place(dout));
  auto gdw = upload(place(dw));
  DeviceBuffer<bf16> gout(N * M + offset), gdx(N * K + offset);
  gout.fill_nan(), gdx.fill_nan();
  blas.matmul_forward(gout.get() + offset, gx.get() + offset, gw.get() + offset, N, K, M, kStream);
  sync();
  EXPECT_TRUE(all_close(download_bf16(gout.get() + offset, N * M), out, rel_atol(out, 1e-4),
                        kBf16Rtol, "forward out" + tag));

  for (int rep = 0; rep < 2; ++rep) {
    cpu::matmul_backward(dx.data(), dw.data(), dout.data(), x.data(), w.data(), N, K, M);
    blas.matmul_backward(gdx.get() + offset, gdw.get() + offset, gdout.get() + offset,
                         gx.get() + offset, gw.get() + offset, N, K, M, kStream);
  }
  sync();
  EXPECT_TRUE(all_close(download_bf16(gdx.get() + offset, N * K), dx, rel_atol(dx, 1e-4),
                        kBf16Rtol, "dx" + tag));
  EXPECT_TRUE(all_close(download(gdw.get() + offset, M * K), dw, rel_atol(dw, 1e-4), 1e-5,
                        "dw (accumulated twice)" + tag));
}

// The model's products: qkv (640 -> 1920), attention out (640 -> 640), the gate/up projection
// (640 -> 1792), down (1792 -> 640), the head (640 -> 50304).
TEST(CudaBlas, ModelShapesMatchCpu) {
  QUEST_REQUIRE_CUDA();
  Rng rng(14);
  gpu::Blas blas;
  for (const MatmulCase c : {MatmulCase{kN, kD, 3 * kD}, MatmulCase{kN, kD, kD},
                             MatmulCase{kN, kD, kH}, MatmulCase{kN, kH, kD},
                             MatmulCase{kN, kD, kVp}})
    check_matmul(blas, c, rng);
  // The same shape again (cached plan), then with 16-byte (not 256-byte) aligned pointers.
  check_matmul(blas, MatmulCase{kN, kD, kD}, rng);
  check_matmul(blas, MatmulCase{kN, kD, kD}, rng, 8);
}

TEST(CudaBlas, SmallAndOddShapes) {
  QUEST_REQUIRE_CUDA();
  Rng rng(15);
  gpu::Blas blas;
  check_matmul(blas, MatmulCase{5, 24, 40}, rng);
  check_matmul(blas, MatmulCase{1, 8, 8}, rng);
  check_matmul(blas, MatmulCase{3, 13, 5}, rng);  // leading dimensions not multiples of 8
}

// bf16 pointers only 2-byte aligned (one element into an allocation). The model never does this;
// a failure that says "no cuBLASLt algorithm" here is cuBLASLt's limit, not a wrong mapping.
TEST(CudaBlas, TwoByteAlignedPointers) {
  QUEST_REQUIRE_CUDA();
  Rng rng(20);
  gpu::Blas blas;
  check_matmul(blas, MatmulCase{3, 13, 5}, rng, 1);
  check_matmul(blas, MatmulCase{64, 64, 64}, rng, 1);
}

// Blas times the heuristic's candidates on a plan's first call and keeps the fastest of those
// whose output is bit for bit the first candidate's (split-K ones, summing in another order, drop
// out): so a tuned Blas gives exactly the bits of an untuned one (QUEST_BLAS_TUNE=0), for every
// product, dw accumulated included. Shapes like those where the H100 offered split-K candidates
// with other bits (a small dw over many rows) and the head's wide output.
TEST(CudaBlas, TuningKeepsTheHeuristicsBits) {
  QUEST_REQUIRE_CUDA();
  auto make = [](const char* tune) {
    const char* old = std::getenv("QUEST_BLAS_TUNE");
    const std::string saved = old ? old : "";
    if (tune) setenv("QUEST_BLAS_TUNE", tune, 1); else unsetenv("QUEST_BLAS_TUNE");
    auto blas = std::make_unique<gpu::Blas>();
    if (old) setenv("QUEST_BLAS_TUNE", saved.c_str(), 1); else unsetenv("QUEST_BLAS_TUNE");
    return blas;
  };
  const auto plain = make("0"), tuned = make(nullptr);
  Rng rng(21);
  for (const MatmulCase c : {MatmulCase{8192, 640, 640}, MatmulCase{8192, 1792, 640},
                             MatmulCase{256, 640, 50304}}) {
    const auto [N, K, M] = c;
    const std::string tag = " N=" + std::to_string(N) + " K=" + std::to_string(K) + " M=" + std::to_string(M);
    auto gx = upload_bf16(randn(rng, N * K, 1.0, true));
    auto gw = upload_bf16(randn(rng, M * K, 1.0 / std::sqrt(K), true));
    auto gdout = upload_bf16(randn(rng, N * M, 1.0, true));
    const auto dw0 = randn(rng, M * K, 10.0);
    struct Out {
      DeviceBuffer<bf16> out, dx;
      DeviceBuffer<float> dw;
    };
    auto run = [&](gpu::Blas& blas) {
      Out o{DeviceBuffer<bf16>(N * M), DeviceBuffer<bf16>(N * K), upload(dw0)};
      blas.matmul_forward(o.out, gx, gw, N, K, M, kStream);
      for (int rep = 0; rep < 2; ++rep) blas.matmul_backward(o.dx, o.dw, gdout, gx, gw, N, K, M, kStream);
      sync();
      return o;
    };
    const Out a = run(*plain), b = run(*tuned);
    auto same = [](const std::vector<float>& u, const std::vector<float>& v) {
      return u.size() == v.size() && std::memcmp(u.data(), v.data(), u.size() * sizeof(float)) == 0;
    };
    EXPECT_TRUE(same(download_bf16(a.out.get(), N * M), download_bf16(b.out.get(), N * M))) << "forward" << tag;
    EXPECT_TRUE(same(download_bf16(a.dx.get(), N * K), download_bf16(b.dx.get(), N * K))) << "dx" << tag;
    EXPECT_TRUE(same(download(a.dw.get(), M * K), download(b.dw.get(), M * K))) << "dw" << tag;
  }
}

TEST(CudaBlas, NullOutputsAndEmptySums) {
  QUEST_REQUIRE_CUDA();
  Rng rng(16);
  gpu::Blas blas;
  const int64_t N = 16, K = 32, M = 24;
  const auto x = randn(rng, N * K, 1.0, true), w = randn(rng, M * K, 0.2, true),
             dout = randn(rng, N * M, 1.0, true);
  auto dw = randn(rng, M * K);
  std::vector<float> dx(N * K);
  auto gx = upload_bf16(x), gw = upload_bf16(w), gdout = upload_bf16(dout);
  auto gdw = upload(dw);
  DeviceBuffer<bf16> gdx(N * K);
  gdx.fill_nan();
  blas.matmul_backward(nullptr, gdw, gdout, gx, gw, N, K, M, kStream);  // dw only
  blas.matmul_backward(gdx, nullptr, gdout, gx, gw, N, K, M, kStream);  // dx only
  sync();
  cpu::matmul_backward(dx.data(), dw.data(), dout.data(), x.data(), w.data(), N, K, M);
  EXPECT_TRUE(all_close(download(gdw), dw, rel_atol(dw, 1e-5), 1e-5, "dw only"));
  EXPECT_TRUE(all_close(download_bf16(gdx), dx, rel_atol(dx, 1e-5), kBf16Rtol, "dx only"));
  // K = 0: the forward is an empty sum, zeros.
  DeviceBuffer<bf16> out(N * M);
  out.fill_nan();
  blas.matmul_forward(out, gx, gw, N, 0, M, kStream);
  sync();
  EXPECT_TRUE(bit_equal(download_bf16(out), std::vector<float>(N * M, 0.0f), "K = 0"));
  EXPECT_THROW(blas.matmul_forward(out, gx, gw, -1, K, M, kStream), Error);
}

// ---- optimizer ---------------------------------------------------------------------------------

double double_sum_squares(const std::vector<float>& g) {
  double s = 0.0;
  for (const float x : g) s += double(x) * x;
  return s;
}

// Against a double sum (the result is one fp32 rounding away: rtol 1e-6), and bitwise
// reproducible from run to run.
TEST(CudaOptimizer, NormSquaredMatchesDoubleSum) {
  QUEST_REQUIRE_CUDA();
  Rng rng(17);
  for (const auto [n, offset] : {std::pair<int64_t, int64_t>{10'000'003, 0}, {10'000'003, 1},
                                 {1, 0}, {777, 3}, {0, 0}}) {
    const auto g = randn(rng, n + offset, 0.01);
    const std::vector<float> used(g.begin() + offset, g.end());
    auto gg = upload(g);
    DeviceBuffer<float> out(1), scratch(size_t(gpu::norm_squared_scratch(n)));
    scratch.fill_nan();
    gpu::norm_squared(out, gg.get() + offset, n, scratch, kStream);
    sync();
    const float first = download(out)[0];
    const double expected = double_sum_squares(used);
    EXPECT_NEAR(first, expected, 1e-6 * expected + 1e-30) << "n=" << n << " offset " << offset;
    gpu::norm_squared(out, gg.get() + offset, n, scratch, kStream);
    sync();
    EXPECT_EQ(std::bit_cast<uint32_t>(download(out)[0]), std::bit_cast<uint32_t>(first))
        << "not reproducible, n=" << n;
  }
}

TEST(CudaOptimizer, ClipScale) {
  QUEST_REQUIRE_CUDA();
  DeviceBuffer<float> ns(1), clip(1);
  auto run = [&](float norm_squared, float max_norm) {
    QUEST_CUDA_CHECK(cudaMemcpy(ns, &norm_squared, sizeof(float), cudaMemcpyHostToDevice));
    clip.fill_nan();
    gpu::clip_scale(clip, ns, max_norm, kStream);
    sync();
    return download(clip)[0];
  };
  EXPECT_EQ(run(4.0f, 1.0f), float(std::min(1.0, 1.0 / (2.0 + 1e-6))));
  EXPECT_EQ(run(0.25f, 1.0f), 1.0f);
  EXPECT_EQ(run(400.0f, 0.0f), 1.0f);  // max_norm 0: no clipping
  EXPECT_EQ(run(400.0f, 5.0f), float(5.0 / (20.0 + 1e-6)));
  EXPECT_TRUE(std::isnan(run(INFINITY, 1.0f)));
  EXPECT_TRUE(std::isnan(run(NAN, 0.0f)));
}

// Several steps of the GPU pipeline (norm_squared -> clip_scale -> adamw_update per group) against
// quest::AdamW::step on the CPU: a decayed group (aligned: the vector path and a tail) and an
// undecayed one that starts at an odd offset (the scalar path). Steps 1-2 clip (large gradients),
// step 3 does not. The update is the CPU's operation sequence, so p, m and v should agree to an
// ulp or so (the clip factor comes from an fp32 norm on the GPU, a double one on the CPU):
// rtol 1e-6. The bf16 copy is exactly the rounded fp32 parameter.
TEST(CudaOptimizer, AdamWMatchesCpu) {
  QUEST_REQUIRE_CUDA();
  Rng rng(18);
  const int64_t n0 = 100003, n1 = 1001, n = n0 + n1;
  std::vector<float> params = randn(rng, n, 0.05), grads(n);
  AdamWConfig cfg;  // 0.9 / 0.95 / 1e-8, decay 0.1, clip 1
  AdamW cpu_opt(cfg, {{params.data(), grads.data(), n0, true},
                      {params.data() + n0, grads.data() + n0, n1, false}});
  auto gp = upload(params);
  DeviceBuffer<float> gg(n), gm(n), gv(n), ns(1), clip(1);
  DeviceBuffer<bf16> gpb(n);
  gm.zero(), gv.zero(), gpb.fill_nan();
  DeviceBuffer<float> scratch(size_t(gpu::norm_squared_scratch(n)));

  const double lrs[] = {1e-3, 6e-4, 3e-4};
  const double grad_scales[] = {1.0, 0.1, 1e-4};
  for (int t = 1; t <= 3; ++t) {
    const auto g = randn(rng, n, grad_scales[t - 1]);
    std::copy(g.begin(), g.end(), grads.begin());
    QUEST_CUDA_CHECK(cudaMemcpy(gg, g.data(), n * sizeof(float), cudaMemcpyHostToDevice));
    const double lr = lrs[t - 1];

    gpu::norm_squared(ns, gg, n, scratch, kStream);
    gpu::clip_scale(clip, ns, float(cfg.grad_clip), kStream);
    gpu::AdamWStep step{float(lr), float(cfg.beta1), float(cfg.beta2), float(cfg.eps),
                        float(cfg.weight_decay), float(1.0 - std::pow(cfg.beta1, t)),
                        float(1.0 - std::pow(cfg.beta2, t))};
    gpu::adamw_update(gp, gpb, gg, gm, gv, n0, step, clip, kStream);
    step.weight_decay = 0.0f;
    gpu::adamw_update(gp.get() + n0, gpb.get() + n0, gg.get() + n0, gm.get() + n0, gv.get() + n0,
                      n1, step, clip, kStream);
    sync();
    const double norm = cpu_opt.step(lr);

    const std::string tag = " step " + std::to_string(t);
    const float got_clip = download(clip)[0];
    EXPECT_NEAR(got_clip, std::min(1.0, cfg.grad_clip / (norm + 1e-6)), 1e-6) << "clip" << tag;
    const auto p = download(gp), m = download(gm), v = download(gv);
    EXPECT_TRUE(all_close(p, params, rel_atol(params, 1e-7), 1e-6, "params" + tag));
    EXPECT_TRUE(all_close(m, cpu_opt.m(), rel_atol(cpu_opt.m(), 1e-6), 1e-6, "m" + tag));
    EXPECT_TRUE(all_close(v, cpu_opt.v(), rel_atol(cpu_opt.v(), 1e-6), 1e-6, "v" + tag));
    EXPECT_TRUE(bit_equal(download_bf16(gpb), round_bf16(p), "bf16 copy" + tag));
    size_t exact = 0;
    for (int64_t i = 0; i < n; ++i) exact += p[i] == params[i];
    std::cout << "[adamw" << tag << "] clip " << got_clip << ", " << exact << " of " << n
              << " parameters bitwise equal to the CPU's\n";
  }
}

// A non-finite gradient norm: the clip factor is NaN and the update leaves everything untouched
// (the host, which reads the norm, reports the divergence).
TEST(CudaOptimizer, NonFiniteNormSkipsTheUpdate) {
  QUEST_REQUIRE_CUDA();
  Rng rng(19);
  const int64_t n = 1000;
  const auto p0 = randn(rng, n, 0.05), m0 = randn(rng, n, 0.01);
  auto g = randn(rng, n);
  g[17] = NAN;
  std::vector<float> v0(n, 1e-4f);
  auto gp = upload(p0), gm = upload(m0), gv = upload(v0), gg = upload(g);
  DeviceBuffer<float> ns(1), clip(1), scratch(size_t(gpu::norm_squared_scratch(n)));
  gpu::norm_squared(ns, gg, n, scratch, kStream);
  gpu::clip_scale(clip, ns, 1.0f, kStream);
  const gpu::AdamWStep step{1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 0.1f, 0.05f};
  gpu::adamw_update(gp, nullptr, gg, gm, gv, n, step, clip, kStream);
  sync();
  EXPECT_TRUE(std::isnan(download(clip)[0]));
  EXPECT_TRUE(bit_equal(download(gp), p0, "params"));
  EXPECT_TRUE(bit_equal(download(gm), m0, "m"));
  EXPECT_TRUE(bit_equal(download(gv), v0, "v"));
}

// ---- host-side argument checks -----------------------------------------------------------------

TEST(CudaOps, BadShapesThrowOnTheHost) {
  QUEST_REQUIRE_CUDA();
  EXPECT_THROW(gpu::to_bf16(nullptr, nullptr, -1, kStream), Error);
  EXPECT_THROW(gpu::rmsnorm_forward(nullptr, nullptr, nullptr, nullptr, 4, 0, 1e-5f, kStream), Error);
  EXPECT_THROW(gpu::rope_forward(nullptr, 1, 4, 2, 7, 10000.0f, 0, kStream), Error);  // odd head_dim
  EXPECT_THROW(gpu::cross_entropy(nullptr, nullptr, nullptr, nullptr, 1, 10, 8, 1.0f, kStream),
               Error);  // Vp < V
  try {
    QUEST_CUDA_CHECK(cudaErrorInvalidValue);
    ADD_FAILURE() << "check did not throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cudaErrorInvalidValue"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace quest
