// The CUDA quantizers (src/quant/cuda) against the CPU reference (src/quant): on the same input the
// device must produce the CPU's codes, masks and steps, bit for bit, except at exact rounding ties
// (the only source of difference is the summation order of the double row sums, which can move a
// row's scale by one ulp). Each check counts its mismatches, bounds them, and prints the first one
// (row, column, input, both outputs, both steps) so a failure names the broken piece:
// - CudaHadamard.*: the FWHT kernel and the mask/transform backward kernel alone;
// - CudaQuantFamily/*: every family member (ste, clip, trust, Hadamard forms, fp4, sparse 4:8,
//   LSQ, PACT) x bits 1,2,3,4,8 x cols 640, 1792 (+ 200 for the non-Hadamard ones: partial mask
//   words), both forms: forward codes/masks/steps (fp32 and bf16 in/out), backward (fp32, bf16,
//   accumulate) and the learned parameters' initialization and gradients;
// - CudaVecKernels.*: the vectorized kernels (ht_row_quantize.cu, hadamard.cu's ht_mask_vec_kernel)
//   against the kernels they replace, bit for bit, edge rows included;
// - CudaLinearOpTest.*: CudaLinearOp against quest::LinearOp at bf16 tolerance, after checking its
//   product weight and masks exactly.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cctype>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <ostream>
#include <sstream>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "cuda/cuda_test_util.h"
#include "quant/alpha.h"
#include "quant/cuda/cuda_linear_op.h"
#include "quant/cuda/cuda_quant.h"
#include "quant/cuda/kernels.h"
#include "quant/factory.h"
#include "quant/grid.h"
#include "quant/hadamard.h"
#include "quant/linear_op.h"
#include "quant/quantizers.h"

namespace quest {
namespace {

using cuda::bf16;
using cuda::DeviceQuantizer;
using cuda::QuantForm;
using cuda_test::DeviceBuffer;
using cuda_test::download;
using cuda_test::download_bf16;
using cuda_test::round_bf16;
using cuda_test::upload;
using cuda_test::upload_bf16;

constexpr int64_t kRows = 1000;
constexpr double kTieFraction = 1e-4;  // allowed fraction of entries that differ at exact ties

bool same_bits(float a, float b) {
  return std::bit_cast<uint32_t>(a) == std::bit_cast<uint32_t>(b);
}

// Rows of very different scales with 1% outliers (so every grid clips), plus edge rows: all zero
// (rms 0: the clip is the 1e-8 term alone), constant (the transform puts all of a block's energy
// in one entry), a single non-zero entry.
std::vector<float> make_input(int64_t rows, int64_t cols, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> x(size_t(rows * cols), 0.0f);
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
    const double scale = std::exp(rng.uniform() * 8.0 - 4.0);
    for (int64_t i = 0; i < cols; ++i) {
      double v = rng.normal() * scale;
      if (rng.uniform() < 0.01) v *= 10.0;
      xr[i] = float(v);
    }
  }
  return x;
}

std::vector<float> randn(int64_t n, uint64_t seed, double scale = 1.0) {
  Rng rng(seed);
  return cuda_test::randn(rng, size_t(n), scale);
}

// The family tests reuse a few inputs many times: generate each once.
const std::vector<float>& cached_input(int64_t rows, int64_t cols, uint64_t seed) {
  static std::map<std::tuple<int64_t, int64_t, uint64_t>, std::vector<float>> cache;
  auto& v = cache[{rows, cols, seed}];
  if (v.empty()) v = make_input(rows, cols, seed);
  return v;
}
const std::vector<float>& cached_randn(int64_t n, uint64_t seed) {
  static std::map<std::pair<int64_t, uint64_t>, std::vector<float>> cache;
  auto& v = cache[{n, seed}];
  if (v.empty()) v = randn(n, seed);
  return v;
}

std::vector<float> cpu_ht(std::vector<float> x, int64_t rows, int64_t cols) {
  hadamard_transform_rows(x.data(), rows, cols);
  return x;
}

// The CPU quantizer in either form: Full is make_quantizer's quantizer; Half (Hadamard specs)
// transforms x and runs the inner quantizer, as LinearOp's half form does.
struct CpuQuant {
  std::unique_ptr<TensorQuantizer> q;
  TensorQuantizer* domain;
  bool half;
  int64_t rows, cols;

  CpuQuant(const QuantSpec& spec, QuantRole role, int64_t rows_, int64_t cols_, QuantForm form)
      : q(make_quantizer(spec, role, cols_)),
        half(form == QuantForm::Half),
        rows(rows_),
        cols(cols_) {
    domain = half ? q->hadamard_inner() : q.get();
    q->reserve(rows, cols);
  }
  std::vector<float> forward(const std::vector<float>& x) {
    std::vector<float> out(x.size());
    if (half) {
      const std::vector<float> h = cpu_ht(x, rows, cols);
      domain->forward(h.data(), out.data(), rows, cols);
    } else {
      q->forward(x.data(), out.data(), rows, cols);
    }
    return out;
  }
  std::vector<float> backward(std::vector<float> g) {
    if (half) {
      domain->backward(g.data(), rows, cols);
      hadamard_transform_rows(g.data(), rows, cols);
    } else {
      q->backward(g.data(), rows, cols);
    }
    return g;
  }
  const MaskBits* mask() const { return q->mask(); }
  float* param() { return q->params().empty() ? nullptr : &q->params()[0]; }
  float param_grad() { return q->param_grads().empty() ? 0.0f : q->param_grads()[0]; }
};

// The per-row step the CPU quantizer uses (what DeviceQuantizer::row_steps() reports), from the
// values in the quantizer's domain.
std::vector<float> cpu_steps(const QuantSpec& s, const std::vector<float>& xd, int64_t rows,
                             int64_t cols, float learned) {
  std::vector<float> st(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    const double rms = grid::row_rms(xd.data() + r * cols, cols);
    const float a = std::max(std::fabs(learned), 1e-8f);
    switch (s.kind) {
      case QuantKind::Fp4:
        st[r] = float(kFp4Unit * rms);
        break;
      case QuantKind::Lsq:
        st[r] = a;
        break;
      case QuantKind::Pact:
        st[r] = grid::make(s.bits, a).step;
        break;
      default:
        st[r] = grid::from_rms(s.bits, rms).step;
        break;
    }
  }
  return st;
}

// The integer code of a grid value: 2 xq / step = 2q - 1 (grid, sparse, PACT), 2q + 1 (LSQ), twice
// the e2m1 level (fp4); 0 for a pruned entry.
int64_t code_of(float xq, float step) {
  if (!(step > 0.0f)) return xq == 0.0f ? 0 : INT64_MIN;
  const double c = 2.0 * double(xq) / double(step);
  return std::isfinite(c) ? std::llrint(c) : INT64_MIN;
}

struct Count {
  int64_t n = 0;
  std::string first;
  template <class F>
  void add(F&& describe) {
    if (n++ == 0) {
      std::ostringstream s;
      describe(s);
      first = s.str();
    }
  }
};

// Codes and bitwise values of the domain outputs (Half form, or quantizers without transform).
struct ForwardDiff {
  Count steps, codes, values, masks;
};

ForwardDiff compare_forward(const QuantSpec& spec, const std::vector<float>& xd,
                            const std::vector<float>& cpu_xq, const std::vector<float>& gpu_xq,
                            const std::vector<float>& cpu_step, const std::vector<float>& gpu_step,
                            const MaskBits* cpu_mask, const std::vector<uint64_t>& gpu_mask,
                            int64_t rows, int64_t cols, bool domain_values) {
  ForwardDiff d;
  for (int64_t r = 0; r < rows; ++r) {
    if (!same_bits(cpu_step[r], gpu_step[r]))
      d.steps.add([&](std::ostream& s) {
        s << "row " << r << ": cpu step " << cpu_step[r] << " gpu step " << gpu_step[r];
      });
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t i = r * cols + c;
      auto describe = [&](std::ostream& s) {
        s << "row " << r << " col " << c << ": x(domain) " << xd[i] << ", cpu xq " << cpu_xq[i]
          << " gpu xq " << gpu_xq[i] << ", cpu step " << cpu_step[r] << " gpu step " << gpu_step[r];
        if (cpu_mask) s << ", cpu mask " << cpu_mask->test(r, c);
        if (!gpu_mask.empty())
          s << " gpu mask "
            << ((gpu_mask[r * MaskBits::words_for(cols) + (c >> 6)] >> (c & 63)) & 1);
      };
      if (!same_bits(cpu_xq[i], gpu_xq[i])) d.values.add(describe);
      if (domain_values && code_of(cpu_xq[i], cpu_step[r]) != code_of(gpu_xq[i], gpu_step[r]))
        d.codes.add(describe);
    }
  }
  if (cpu_mask) {
    const auto words = cpu_mask->words();
    const int64_t wpr = MaskBits::words_for(cols);
    for (int64_t k = 0; k < int64_t(words.size()); ++k) {
      const uint64_t diff = words[k] ^ gpu_mask[k];
      for (uint64_t b = diff; b; b &= b - 1) {
        const int64_t r = k / wpr, c = (k % wpr) * 64 + std::countr_zero(b);
        d.masks.add([&](std::ostream& s) {
          s << "row " << r << " col " << c << ": cpu mask " << ((words[k] >> (c & 63)) & 1)
            << " gpu mask " << ((gpu_mask[k] >> (c & 63)) & 1) << (c < cols ? "" : " (padding bit)")
            << ", x(domain) " << (c < cols ? xd[r * cols + c] : 0.0f);
        });
      }
    }
  }
  return d;
}

// Bitwise comparison of two result vectors; the first mismatch with its position.
Count compare_bits(const std::vector<float>& want, const std::vector<float>& got, int64_t cols) {
  Count n;
  for (size_t i = 0; i < want.size(); ++i)
    if (!same_bits(want[i], got[i]))
      n.add([&](std::ostream& s) {
        s << "row " << int64_t(i) / cols << " col " << int64_t(i) % cols << ": want " << want[i]
          << " got " << got[i];
      });
  return n;
}

// ---- the Hadamard transform and the mask backward alone
// --------------------------------------------

TEST(CudaHadamard, MatchesCpuBitwise) {
  QUEST_REQUIRE_CUDA();
  for (const int64_t cols : {int64_t(128), int64_t(640), int64_t(1792)}) {
    SCOPED_TRACE("cols " + std::to_string(cols));
    const auto x = make_input(kRows, cols, 11);
    const auto want = cpu_ht(x, kRows, cols);
    auto dx = upload(x);
    DeviceBuffer<float> out(x.size());
    out.fill_nan();
    cuda::hadamard_rows(out.get(), dx.get(), kRows, cols, nullptr);
    const Count c = compare_bits(want, download(out), cols);
    EXPECT_EQ(c.n, 0) << "fp32 -> fp32: " << c.first;
    cuda::hadamard_rows(dx.get(), dx.get(), kRows, cols, nullptr);  // in place
    const Count c2 = compare_bits(want, download(dx), cols);
    EXPECT_EQ(c2.n, 0) << "fp32 in place: " << c2.first;

    // fp32 -> bf16: the fp32 transform rounded once.
    DeviceBuffer<bf16> ob(x.size());
    auto dx32 = upload(x);
    cuda::hadamard_rows(ob.get(), dx32.get(), kRows, cols, nullptr);
    const Count c3 = compare_bits(round_bf16(want), download_bf16(ob), cols);
    EXPECT_EQ(c3.n, 0) << "fp32 -> bf16: " << c3.first;

    // bf16 -> bf16 in place: the transform of the bf16 values, rounded.
    const auto xb = round_bf16(x);
    auto db = upload_bf16(xb);
    cuda::hadamard_rows(db.get(), db.get(), kRows, cols, nullptr);
    const Count c4 = compare_bits(round_bf16(cpu_ht(xb, kRows, cols)), download_bf16(db), cols);
    EXPECT_EQ(c4.n, 0) << "bf16 in place: " << c4.first;
  }
}

TEST(CudaHadamard, RejectsBadRows) {
  QUEST_REQUIRE_CUDA();
  DeviceBuffer<float> b(200);
  EXPECT_THROW(cuda::hadamard_rows(b.get(), b.get(), 1, 200, nullptr), Error);
}

// mask_backward with a random mask against HT / MaskBits::apply / HT on the CPU.
TEST(CudaHadamard, MaskBackwardMatchesCpu) {
  QUEST_REQUIRE_CUDA();
  for (const int64_t cols : {int64_t(200), int64_t(640), int64_t(1792)}) {
    Rng rng(cols);
    MaskBits mask;
    mask.reset(kRows, cols);
    for (int64_t r = 0; r < kRows; ++r)
      for (int64_t c = 0; c < cols; ++c)
        if (rng.uniform() < 0.2) MaskBits::set(mask.row(r), c);
    const std::vector<uint64_t> words(mask.words().begin(), mask.words().end());
    auto dmask = upload(words);
    const auto g = randn(kRows * cols, 5 + cols);
    const bool ht_ok = cols % 128 == 0;
    for (const int variant : {0, 1, 2, 3}) {  // no HT, HT after, HT before and after, HT only
      if (variant > 0 && !ht_ok) continue;
      SCOPED_TRACE("cols " + std::to_string(cols) + " variant " + std::to_string(variant));
      cuda::MaskBackward mb;
      mb.mask = variant == 3 ? nullptr : dmask.get();
      mb.ht_before = variant == 2;
      mb.ht_after = variant >= 1;
      std::vector<float> want = g;
      if (mb.ht_before) hadamard_transform_rows(want.data(), kRows, cols);
      if (mb.mask) mask.apply(want.data());
      if (mb.ht_after) hadamard_transform_rows(want.data(), kRows, cols);

      auto dg = upload(g);
      cuda::mask_backward(dg.get(), kRows, cols, mb, nullptr);
      const Count c = compare_bits(want, download(dg), cols);
      EXPECT_EQ(c.n, 0) << "fp32 in place: " << c.first;

      const auto gb = round_bf16(g);
      std::vector<float> want_b = gb;
      if (mb.ht_before) hadamard_transform_rows(want_b.data(), kRows, cols);
      if (mb.mask) mask.apply(want_b.data());
      if (mb.ht_after) hadamard_transform_rows(want_b.data(), kRows, cols);
      auto dgb = upload_bf16(gb);
      cuda::mask_backward(dgb.get(), kRows, cols, mb, nullptr);
      const Count cb = compare_bits(round_bf16(want_b), download_bf16(dgb), cols);
      EXPECT_EQ(cb.n, 0) << "bf16 in place: " << cb.first;

      const auto dst0 = randn(kRows * cols, 9);
      auto ddst = upload(dst0);
      auto dsrc = upload(g);
      cuda::mask_backward_accumulate(ddst.get(), dsrc.get(), kRows, cols, mb, nullptr);
      std::vector<float> want_acc = dst0;
      for (size_t i = 0; i < want_acc.size(); ++i) want_acc[i] += want[i];
      const Count ca = compare_bits(want_acc, download(ddst), cols);
      EXPECT_EQ(ca.n, 0) << "accumulate: " << ca.first;
      const Count cs = compare_bits(g, download(dsrc), cols);
      EXPECT_EQ(cs.n, 0) << "accumulate changed its source: " << cs.first;
    }
    DeviceBuffer<unsigned long long> count(1);
    count.zero();
    cuda::count_bits(count.get(), dmask.get(), int64_t(words.size()), nullptr);
    EXPECT_EQ(int64_t(download(count)[0]), mask.count());
  }
}

// ---- every family member against its CPU quantizer
// ---------------------------------------------------

struct FamilyCase {
  std::string spec;
  int64_t cols;
};

void PrintTo(const FamilyCase& c, std::ostream* os) { *os << c.spec << " cols " << c.cols; }

std::string case_name(const ::testing::TestParamInfo<FamilyCase>& info) {
  std::string s = info.param.spec + "_" + std::to_string(info.param.cols);
  for (char& ch : s)
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  return s;
}

std::vector<FamilyCase> family_cases() {
  std::vector<std::string> specs;
  for (const int b : {1, 2, 3, 4, 8}) {
    const std::string bs = std::to_string(b);
    for (const char* name : {"ste", "clip", "trust", "hadamard-ste", "hadamard-clip",
                             "hadamard-trust", "pact", "sparse48", "hadamard-sparse48"})
      specs.push_back(std::string(name) + ":" + bs);
    specs.push_back("clip:" + bs + ":c=1.5");
    specs.push_back("hadamard-clip:" + bs + ":c=0.8");
    if (b >= 2) specs.push_back("lsq:" + bs);
    if (b >= 2) specs.push_back("hadamard-trust:" + bs + ":t=0.2");
  }
  specs.push_back("trust:1:t=0.9");           // 1-bit trust with the trust mask
  specs.push_back("hadamard-trust:1:c=1.1");  // 1-bit QuEST with another clip factor
  specs.push_back("fp4");
  specs.push_back("hadamard-fp4");
  specs.push_back("hadamard-fp4:t=0.3");
  std::vector<FamilyCase> cases;
  for (const auto& s : specs) {
    cases.push_back({s, 640});
    cases.push_back({s, 1792});
    // Partial mask words (200 = 3 * 64 + 8) for the quantizers without the transform.
    if (!QuantSpec::parse(s).hadamard && (s.ends_with(":4") || s == "fp4"))
      cases.push_back({s, 200});
  }
  return cases;
}

class CudaQuantFamily : public ::testing::TestWithParam<FamilyCase> {};

void run_family_case(const QuantSpec& spec, int64_t cols, QuantForm form, bool negative_param) {
  const QuantRole role = spec.kind == QuantKind::Sparse48 ? QuantRole::Weight : QuantRole::Input;
  const bool learned = spec.kind == QuantKind::Lsq || spec.kind == QuantKind::Pact;
  const bool ht = spec.hadamard;
  const bool domain_values = !ht || form == QuantForm::Half;
  const int64_t rows = kRows, n = rows * cols, wpr = MaskBits::words_for(cols);
  const int64_t tie_budget = std::max<int64_t>(1, int64_t(kTieFraction * double(n)));
  const auto& x = cached_input(rows, cols, 1000 + uint64_t(cols));
  const auto xd = ht ? cpu_ht(x, rows, cols) : x;  // the quantizer's domain

  CpuQuant cpu(spec, role, rows, cols, form);
  DeviceQuantizer gq(spec, role, rows, cols);
  ASSERT_EQ(gq.has_param(), learned);
  ASSERT_EQ(gq.mask() == nullptr, cpu.mask() == nullptr) << "masking families differ";
  EXPECT_EQ(gq.words_per_row(), wpr);
  if (learned) EXPECT_EQ(gq.param_name(), cpu.q->param_names()[0]);

  auto dx = upload(x);
  DeviceBuffer<float> dq(static_cast<size_t>(n));
  if (!learned) {  // a forward on other data first: the next one must overwrite all its state
    auto dx2 = upload(cached_input(rows, cols, 77));
    gq.forward(dx2.get(), dq.get(), rows, form, nullptr);
  }
  if (negative_param) {  // the optimizer carried the value through zero: the grid uses |value|
    const float v = spec.kind == QuantKind::Lsq ? -0.05f : -0.9f;
    gq.write_param(v, 0.0f);
    *cpu.param() = v;
  }
  dq.fill_nan();
  gq.forward(dx.get(), dq.get(), rows, form, nullptr);
  const auto gpu_xq = download(dq);
  auto cpu_xq = cpu.forward(x);
  float learned_value = 0.0f;
  if (learned) {
    learned_value = gq.read_param();
    const float cv = *cpu.param();
    EXPECT_NEAR(learned_value, cv, 1e-6 * std::fabs(cv)) << "learned value (initialization)";
    if (!same_bits(learned_value, cv)) {  // quantize with the same value on both sides
      *cpu.param() = learned_value;
      cpu_xq = cpu.forward(x);
    }
  }
  const auto gpu_step = download(gq.row_steps(), size_t(rows));
  const auto cpu_step = cpu_steps(spec, xd, rows, cols, learned_value);
  std::vector<uint64_t> gpu_mask;
  if (gq.mask()) gpu_mask = download(gq.mask(), size_t(rows * wpr));

  const ForwardDiff d = compare_forward(spec, xd, cpu_xq, gpu_xq, cpu_step, gpu_step, cpu.mask(),
                                        gpu_mask, rows, cols, domain_values);
  EXPECT_LE(d.steps.n, 1) << "rows whose step differs; first: " << d.steps.first;
  const int64_t row_slack = d.steps.n * cols;
  EXPECT_LE(d.masks.n, tie_budget + row_slack) << "mask bits differ; first: " << d.masks.first;
  if (domain_values) {
    EXPECT_LE(d.codes.n, tie_budget + row_slack) << "codes differ; first: " << d.codes.first;
    EXPECT_LE(d.values.n, tie_budget + row_slack) << "values differ; first: " << d.values.first;
  } else {  // Full form of a Hadamard quantizer: a differing code moves its whole 128-block
    EXPECT_LE(d.values.n, 128 * tie_budget + row_slack)
        << "full-form values differ; first: " << d.values.first;
  }
  const int64_t mask_diff = d.masks.n;

  // bf16 output: the fp32 result rounded once.
  {
    DeviceBuffer<bf16> dqb(static_cast<size_t>(n));
    gq.forward(dx.get(), dqb.get(), rows, form, nullptr);
    const Count c = compare_bits(round_bf16(gpu_xq), download_bf16(dqb), cols);
    EXPECT_EQ(c.n, 0) << "bf16 output vs the fp32 output rounded: " << c.first;
  }

  // Backward (the state is that of the forward on x again).
  const int64_t spread = ht ? 128 : 1;
  const int64_t bwd_budget = spread * mask_diff + row_slack;
  const auto& g = cached_randn(n, 3 + uint64_t(cols));
  const float cpu_pg0 = cpu.param_grad(), gpu_pg0 = learned ? gq.read_param_grad() : 0.0f;
  const auto cpu_g = cpu.backward(g);
  auto dg = upload(g);
  gq.backward(dg.get(), rows, form, nullptr);
  {
    const Count c = compare_bits(cpu_g, download(dg), cols);
    EXPECT_LE(c.n, bwd_budget) << "fp32 backward; first: " << c.first;
  }
  if (learned) {
    const double want = double(cpu.param_grad()) - cpu_pg0;
    const double got = double(gq.read_param_grad()) - gpu_pg0;
    EXPECT_NEAR(got, want, 1e-5 * std::fabs(want) + 1e-7) << "learned parameter's gradient";
  }
  {  // bf16 gradient in place
    const auto gb = round_bf16(g);
    const auto cpu_gb = round_bf16(cpu.backward(gb));
    auto dgb = upload_bf16(gb);
    gq.backward(dgb.get(), rows, form, nullptr);
    const Count c = compare_bits(cpu_gb, download_bf16(dgb), cols);
    EXPECT_LE(c.n, bwd_budget) << "bf16 backward; first: " << c.first;
  }
  {  // dst += dL/dx
    const auto& dst0 = cached_randn(n, 99);
    auto ddst = upload(dst0);
    auto dsrc = upload(g);
    gq.backward_accumulate(ddst.get(), dsrc.get(), rows, form, nullptr);
    std::vector<float> want = dst0;
    for (int64_t i = 0; i < n; ++i) want[i] += cpu_g[i];
    const Count c = compare_bits(want, download(ddst), cols);
    EXPECT_LE(c.n, bwd_budget) << "accumulating backward; first: " << c.first;
    const Count cs = compare_bits(g, download(dsrc), cols);
    EXPECT_EQ(cs.n, 0) << "backward_accumulate changed its source: " << cs.first;
  }

  // bf16 input: the bf16 values, quantized exactly as the CPU quantizes them.
  {
    const auto xb = round_bf16(x);
    const auto xbd = ht ? cpu_ht(xb, rows, cols) : xb;
    CpuQuant cpu2(spec, role, rows, cols, form);
    DeviceQuantizer gq2(spec, role, rows, cols);
    if (learned) {
      gq2.write_param(learned_value);
      *cpu2.param() = learned_value;
    }
    auto dxb = upload_bf16(xb);
    DeviceBuffer<float> dq2(static_cast<size_t>(n));
    gq2.forward(dxb.get(), dq2.get(), rows, form, nullptr);
    const auto cpu2_xq = cpu2.forward(xb);
    std::vector<uint64_t> gm2;
    if (gq2.mask()) gm2 = download(gq2.mask(), size_t(rows * wpr));
    const ForwardDiff d2 = compare_forward(
        spec, xbd, cpu2_xq, download(dq2), cpu_steps(spec, xbd, rows, cols, learned_value),
        download(gq2.row_steps(), size_t(rows)), cpu2.mask(), gm2, rows, cols, domain_values);
    const int64_t slack2 = d2.steps.n * cols;
    EXPECT_LE(d2.steps.n, 1) << "bf16 input: rows whose step differs; first: " << d2.steps.first;
    EXPECT_LE(d2.masks.n, tie_budget + slack2) << "bf16 input: masks; first: " << d2.masks.first;
    EXPECT_LE(d2.values.n, (domain_values ? 1 : 128) * tie_budget + slack2)
        << "bf16 input: values; first: " << d2.values.first;
  }
}

TEST_P(CudaQuantFamily, MatchesCpu) {
  QUEST_REQUIRE_CUDA();
  const FamilyCase& c = GetParam();
  const QuantSpec spec = QuantSpec::parse(c.spec);
  const bool learned = spec.kind == QuantKind::Lsq || spec.kind == QuantKind::Pact;
  std::vector<QuantForm> forms = {QuantForm::Full};
  if (spec.hadamard) forms.insert(forms.begin(), QuantForm::Half);
  for (const QuantForm form : forms)
    for (const bool negative : {false, true}) {
      if (negative && !learned) continue;
      SCOPED_TRACE(c.spec + " cols " + std::to_string(c.cols) +
                   (form == QuantForm::Half ? " half form" : " full form") +
                   (negative ? " negative learned value" : ""));
      run_family_case(spec, c.cols, form, negative);
    }
}

INSTANTIATE_TEST_SUITE_P(All, CudaQuantFamily, ::testing::ValuesIn(family_cases()), case_name);

TEST(CudaQuant, RejectsBadUse) {
  QUEST_REQUIRE_CUDA();
  const auto spec = [](const char* s) { return QuantSpec::parse(s); };
  EXPECT_THROW(DeviceQuantizer(spec("quest:4"), QuantRole::Input, 8, 200), Error);  // 200 % 128
  EXPECT_THROW(DeviceQuantizer(spec("sparse48:4"), QuantRole::Input, 8, 640),
               Error);  // weights only
  EXPECT_THROW(DeviceQuantizer(spec("none"), QuantRole::Input, 8, 640), Error);
  DeviceQuantizer q(spec("trust:4"), QuantRole::Input, 8, 640);
  DeviceBuffer<float> b(16 * 640);
  EXPECT_THROW(q.forward(b.get(), b.get(), 8, QuantForm::Half, nullptr), Error);   // no transform
  EXPECT_THROW(q.forward(b.get(), b.get(), 16, QuantForm::Full, nullptr), Error);  // > max_rows
  q.forward(b.get(), b.get(), 4, QuantForm::Full, nullptr);
  EXPECT_THROW(q.backward(b.get(), 5, QuantForm::Full, nullptr), Error);  // not the forward's rows
}

// ---- CudaLinearOp against LinearOp
// -------------------------------------------------------------------

struct OpCase {
  std::string config;  // QuantConfig full spelling ("" = none)
  bool bf16_weight;    // prepare_weight from the bf16 copy instead of the fp32 master
};

void PrintTo(const OpCase& c, std::ostream* os) {
  *os << (c.config.empty() ? "none" : c.config) << (c.bf16_weight ? " (bf16 weight)" : "");
}

std::string op_case_name(const ::testing::TestParamInfo<OpCase>& info) {
  std::string s = info.param.config.empty() ? "none" : info.param.config;
  if (info.param.bf16_weight) s += "_bf16w";
  for (char& ch : s)
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  return s;
}

class CudaLinearOpTest : public ::testing::TestWithParam<OpCase> {};

double rms_of(const std::vector<float>& v) {
  double s = 0;
  for (float x : v) s += double(x) * x;
  return v.empty() ? 0.0 : std::sqrt(s / double(v.size()));
}

TEST_P(CudaLinearOpTest, MatchesCpuLinearOp) {
  QUEST_REQUIRE_CUDA();
  const OpCase& oc = GetParam();
  const QuantConfig cfg = oc.config.empty() ? QuantConfig::none() : QuantConfig::parse(oc.config);
  constexpr int64_t in = 640, out = 384, N = 200, max_rows = 256;
  SCOPED_TRACE(cfg.to_string());

  // The GPU sees bf16 activations and gradients: give the CPU the same (rounded) values. The
  // weight is fp32 (the master) or its bf16 copy.
  const auto x = round_bf16(randn(N * in, 1));
  auto w = randn(out * in, 2, 0.05);
  if (oc.bf16_weight) w = round_bf16(w);
  const auto dy = round_bf16(randn(N * out, 3));
  const auto dw0 = randn(out * in, 4, 0.1);

  LinearOp cpu(in, out, max_rows, cfg);
  std::vector<float> y(static_cast<size_t>(N * out)), dx(static_cast<size_t>(N * in)), dw = dw0;
  cpu.prepare_weight(w.data());
  cpu.forward(x.data(), y.data(), N);
  cpu.backward(dy.data(), dx.data(), dw.data(), N);

  cuda::Blas blas;
  cuda::CudaLinearOp op(in, out, max_rows, cfg, blas);
  EXPECT_EQ(op.half_form(), cpu.half_form());
  auto dw32 = upload(w);
  auto dwb = upload_bf16(w);
  auto dxin = upload_bf16(x);
  auto ddy = upload_bf16(dy);
  DeviceBuffer<bf16> dyout(static_cast<size_t>(N * out)), ddx(static_cast<size_t>(N * in));
  auto ddw = upload(dw0);
  if (oc.bf16_weight)
    op.prepare_weight(dwb.get(), nullptr);
  else
    op.prepare_weight(dw32.get(), nullptr);

  // The product weight: the CPU's quantized weight rounded to bf16, exactly (but for ties).
  const int64_t wn = out * in;
  {
    const auto gw = download_bf16(op.product_weight(), size_t(wn));
    const std::vector<float> cw(cpu.product_weight(), cpu.product_weight() + wn);
    const Count c = compare_bits(round_bf16(cw), gw, in);
    EXPECT_LE(c.n, 128 * std::max<int64_t>(1, int64_t(kTieFraction * wn)))
        << "product weight differs; first: " << c.first;
  }
  op.forward(dxin.get(), dyout.get(), N, nullptr);
  op.backward(ddy.get(), ddx.get(), ddw.get(), N, nullptr);
  cuda_test::sync();

  // Masks, exactly (but for ties).
  auto check_mask = [&](const DeviceQuantizer* gq, const MaskBits* cm, int64_t rows,
                        const char* what) {
    if (!gq || !gq->mask() || !cm) {
      EXPECT_EQ(gq && gq->mask(), cm != nullptr) << what << ": one side masks, the other not";
      return;
    }
    const auto gm = download(gq->mask(), size_t(rows * MaskBits::words_for(in)));
    int64_t diff = 0;
    for (size_t k = 0; k < gm.size(); ++k) diff += std::popcount(gm[k] ^ cm->words()[k]);
    EXPECT_LE(diff, std::max<int64_t>(1, int64_t(kTieFraction * rows * in)))
        << what << " mask bits";
  };
  check_mask(op.weight_quantizer(), cpu.weight_mask(), out, "weight");
  check_mask(op.input_quantizer(), cpu.input_mask(), N, "input");

  // y, dx, dw at bf16 tolerance: the product operands are the quantized values rounded to bf16
  // (relative 2^-9 each), the products accumulate in fp32 and y, dx are rounded to bf16.
  const auto gy = download_bf16(dyout);
  EXPECT_TRUE(cuda_test::all_close(gy, y, 0.03 * rms_of(y), 1.0 / 64, "y"));
  const auto gdx = download_bf16(ddx);
  EXPECT_TRUE(cuda_test::all_close(gdx, dx, 0.03 * rms_of(dx), 1.0 / 64, "dx"));
  const auto gdw = download(ddw);
  std::vector<float> delta(dw.size());
  for (size_t i = 0; i < dw.size(); ++i) delta[i] = dw[i] - dw0[i];
  EXPECT_TRUE(cuda_test::all_close(gdw, dw, 0.03 * rms_of(delta), 1.0 / 64, "dw"));

  // Learned parameters: names, initialization (exact up to the summation order), gradients.
  auto cpu_params = cpu.learned_params();
  auto gpu_params = op.learned_params();
  ASSERT_EQ(cpu_params.size(), gpu_params.size());
  for (size_t i = 0; i < cpu_params.size(); ++i) {
    const std::string& name = cpu_params[i].name;
    EXPECT_EQ(gpu_params[i].name, name);
    const float v = download(gpu_params[i].value, 1)[0], g = download(gpu_params[i].grad, 1)[0];
    const float cv = cpu_params[i].value[0], cg = cpu_params[i].grad[0];
    EXPECT_NEAR(v, cv, 1e-6 * std::fabs(cv)) << name;
    // The gradient sums many terms computed from bf16-rounded operands (relative 2^-8 each, random
    // signs): bound the difference by 2% of the scale of such a sum, sqrt(numel) * rms(term),
    // times the LSQ gradient scale 1 / sqrt(numel * qmax).
    const bool weight = name.starts_with("weight.");
    const QuantSpec& qs = weight ? cfg.weight : cfg.input;
    const double numel = weight ? double(out * in) : double(N * in);
    const double rg = weight ? rms_of(delta) : rms_of(dx);
    const double qmax = double((1 << (qs.bits - 1)) - 1);
    const double scale = qs.kind == QuantKind::Lsq ? rg / std::sqrt(qmax) : rg * std::sqrt(numel);
    EXPECT_NEAR(g, cg, 2e-2 * scale) << name << " gradient";
  }
}

INSTANTIATE_TEST_SUITE_P(
    Configs, CudaLinearOpTest,
    ::testing::Values(OpCase{"", false}, OpCase{"", true}, OpCase{"w=quest:4,a=quest:4", false},
                      OpCase{"w=quest:4,a=quest:4", true},
                      OpCase{"w=quest:4,a=quest:4,form=full", false}, OpCase{"w=quest:4", false},
                      OpCase{"a=quest:4", false}, OpCase{"w=quest:1,a=quest:1", false},
                      OpCase{"w=quest:8,a=quest:8", false}, OpCase{"w=ste:4,a=trust:3", false},
                      OpCase{"w=lsq:4,a=pact:4", false}, OpCase{"w=quest:4,a=lsq:4", false},
                      OpCase{"w=hadamard-sparse48:4,a=quest:4", false},
                      OpCase{"w=hadamard-fp4,a=fp4", false}),
    op_case_name);

TEST(CudaLinearOpChecks, ErrorsAndNoStaleState) {
  QUEST_REQUIRE_CUDA();
  cuda::Blas blas;
  EXPECT_THROW(cuda::CudaLinearOp(200, 64, 32, QuantConfig::parse("w=quest:4,a=quest:4"), blas),
               Error);  // in % 128
  cuda::CudaLinearOp op(256, 64, 32, QuantConfig::parse("w=quest:4,a=lsq:4"), blas);
  DeviceBuffer<bf16> x(32 * 256), y(32 * 64), dy(32 * 64);
  x.zero();
  EXPECT_THROW(op.forward(x.get(), y.get(), 8, nullptr), Error);  // before prepare_weight
  auto w = upload(randn(64 * 256, 1, 0.05));
  op.prepare_weight(w.get(), nullptr);
  EXPECT_THROW(op.forward(x.get(), y.get(), 33, nullptr), Error);  // > max_rows
  op.forward(x.get(), y.get(), 8, nullptr);
  EXPECT_THROW(op.backward(dy.get(), nullptr, nullptr, 8, nullptr), Error);  // LSQ input needs dx
  EXPECT_THROW(op.backward(dy.get(), x.get(), nullptr, 9, nullptr), Error);  // not the forward's N
  cuda_test::sync();
}

// ---- the vectorized kernels against the kernels they replace, bit for bit ----------------------
// The grid family with the transform (ht_row_quantize.cu) must give
// row_quantize_kernel's bits
// (RowQuantArgs::legacy) everywhere: every bit width and mask rule, both forms, all four type
// pairs, row widths from one block to the largest they take (and one past it: the fallback),
// every register slice (RowQuantArgs::vec_variant), row counts that leave CTAs and teams partly
// idle, in place, and rows that leave the fast arithmetic (NaN, inf) or test it at the extremes
// (huge, subnormal, zero).
namespace vec_kernels {

std::vector<float> edge_rows(int64_t rows, int64_t cols, uint64_t seed) {
  std::vector<float> x = make_input(rows, cols, seed);  // rows 0..2: zero, constant, one entry
  float* r = x.data();
  r[3 * cols + cols / 2] = std::numeric_limits<float>::quiet_NaN();
  r[4 * cols + 1] = std::numeric_limits<float>::infinity();
  for (int64_t c = 0; c < cols; c += 128) r[5 * cols + c] = c % 256 ? 3.0e38f : -3.0e38f;
  Rng rng(seed + 1);
  for (int64_t c = 0; c < cols; ++c) {
    r[6 * cols + c] = float(rng.normal() * 1e-39);  // subnormal (bf16 keeps some)
    r[7 * cols + c] = float(rng.normal() * 1e-30);
  }
  return x;
}

template <class TIn, class TOut>
Count compare_row_kernels(const QuantSpec& spec, const std::vector<float>& x, int64_t rows,
                          int64_t cols, bool full, int variant, bool in_place = false) {
  const MaskRule rule = spec.mask_rule();
  const int64_t wpr = cols / 64, n = rows * cols;
  auto make_in = [&] {
    if constexpr (std::is_same_v<TIn, bf16>)
      return upload_bf16(x);
    else
      return upload(x);
  };
  DeviceBuffer<TIn> xin = make_in(), xin2 = make_in();
  DeviceBuffer<TOut> q_old(static_cast<size_t>(n)), q_new(static_cast<size_t>(n));
  DeviceBuffer<uint64_t> m_old(static_cast<size_t>(rows * wpr)),
      m_new(static_cast<size_t>(rows * wpr));
  DeviceBuffer<float> s_old(static_cast<size_t>(rows)), s_new(static_cast<size_t>(rows));
  q_old.fill_nan(), q_new.fill_nan(), m_old.fill_nan(), m_new.fill_nan();
  s_old.fill_nan(), s_new.fill_nan();
  cuda::qdetail::RowQuantArgs a;
  a.rows = rows, a.cols = cols, a.bits = spec.bits, a.unit = kAlpha[spec.bits];
  a.rule = rule.type == MaskRule::Type::None ? 0 : rule.type == MaskRule::Type::Clip ? 1 : 2;
  a.clip_factor = float(rule.factor), a.trust = rule.factor;
  a.ht_in = true, a.ht_out = full;
  a.mask = m_old.get(), a.step = s_old.get(), a.legacy = true;
  cuda::qdetail::launch_row_quantize(cuda::qdetail::RowFamily::Grid, xin.get(), q_old.get(), a,
                                     nullptr);
  a.mask = m_new.get(), a.step = s_new.get(), a.legacy = false, a.vec_variant = variant;
  TOut* out = q_new.get();
  if constexpr (std::is_same_v<TIn, TOut>)
    if (in_place) out = xin2.get();
  cuda::qdetail::launch_row_quantize(cuda::qdetail::RowFamily::Grid, xin2.get(), out, a, nullptr);
  cuda_test::sync();

  Count diff;
  auto bits_of = [](const std::vector<TOut>& v, size_t i) {
    if constexpr (std::is_same_v<TOut, bf16>)
      return uint32_t(std::bit_cast<uint16_t>(v[i]));
    else
      return std::bit_cast<uint32_t>(v[i]);
  };
  const auto qo = download(q_old.get(), size_t(n)), qn = download(out, size_t(n));
  for (size_t i = 0; i < qo.size(); ++i)
    if (bits_of(qo, i) != bits_of(qn, i))
      diff.add([&](std::ostream& s) {
        s << "xq row " << int64_t(i) / cols << " col " << int64_t(i) % cols << ": old "
          << std::hex << bits_of(qo, i) << " new " << bits_of(qn, i) << std::dec;
      });
  const auto so = download(s_old), sn = download(s_new);
  for (int64_t r = 0; r < rows; ++r)
    if (std::bit_cast<uint32_t>(so[r]) != std::bit_cast<uint32_t>(sn[r]))
      diff.add([&](std::ostream& s) {
        s << "step row " << r << ": old " << so[r] << " new " << sn[r];
      });
  if (a.rule != 0) {
    const auto mo = download(m_old), mn = download(m_new);
    for (size_t k = 0; k < mo.size(); ++k)
      if (mo[k] != mn[k])
        diff.add([&](std::ostream& s) {
          s << "mask word " << k << " (row " << int64_t(k) / wpr << "): old " << std::hex << mo[k]
            << " new " << mn[k] << std::dec;
        });
  }
  return diff;
}

TEST(CudaVecKernels, GridRowsMatchTheRowKernel) {
  QUEST_REQUIRE_CUDA();
  std::vector<std::string> specs;
  for (int b = 1; b <= 8; ++b) specs.push_back("hadamard-trust:" + std::to_string(b));
  specs.push_back("hadamard-clip:4:c=0.8");
  specs.push_back("hadamard-ste:3");
  constexpr int64_t rows = 37;  // not a multiple of the rows per CTA (8, 4, 2, 1)
  // 1152: not a multiple of its sum's 256 threads (the guarded ordered sum at one chain).
  for (const int64_t cols : {128, 256, 384, 640, 1024, 1152, 1280, 1792, 3584, 4096, 8320, 11008,
                             16384, 16512}) {
    const auto x = edge_rows(rows, cols, 500 + uint64_t(cols));
    for (const auto& name : specs) {
      const QuantSpec spec = QuantSpec::parse(name);
      for (const bool full : {false, true})
        for (const int vs : {0, 2, 3}) {  // RowQuantArgs::vec_variant
          SCOPED_TRACE(name + " cols " + std::to_string(cols) + (full ? " full" : " half") +
                       " variant " + std::to_string(vs));
          const Count c1 = compare_row_kernels<bf16, bf16>(spec, x, rows, cols, full, vs);
          EXPECT_EQ(c1.n, 0) << "bf16 -> bf16; first: " << c1.first;
          const Count c2 = compare_row_kernels<float, float>(spec, x, rows, cols, full, vs);
          EXPECT_EQ(c2.n, 0) << "fp32 -> fp32; first: " << c2.first;
          if (name != "hadamard-trust:4") continue;
          const Count c3 = compare_row_kernels<float, bf16>(spec, x, rows, cols, full, vs);
          EXPECT_EQ(c3.n, 0) << "fp32 -> bf16; first: " << c3.first;
          const Count c4 = compare_row_kernels<bf16, float>(spec, x, rows, cols, full, vs);
          EXPECT_EQ(c4.n, 0) << "bf16 -> fp32; first: " << c4.first;
          const Count c5 = compare_row_kernels<bf16, bf16>(spec, x, rows, cols, full, vs, true);
          EXPECT_EQ(c5.n, 0) << "bf16 in place; first: " << c5.first;
        }
    }
  }
}

// Many rows (many CTAs per SM in turn), also in place.
TEST(CudaVecKernels, GridRowsManyRows) {
  QUEST_REQUIRE_CUDA();
  struct Shape {
    int64_t rows, cols;
  };
  for (const Shape sh : {Shape{9000, 640}, Shape{3000, 1792}, Shape{700, 11008}}) {
    const auto x = edge_rows(sh.rows, sh.cols, 900 + uint64_t(sh.cols));
    for (const char* name : {"hadamard-trust:4", "hadamard-clip:2:c=1.1"})
      for (const int vs : {0, 2, 3}) {
        SCOPED_TRACE(std::string(name) + " rows " + std::to_string(sh.rows) + " cols " +
                     std::to_string(sh.cols) + " variant " + std::to_string(vs));
        const QuantSpec spec = QuantSpec::parse(name);
        const Count c1 = compare_row_kernels<bf16, bf16>(spec, x, sh.rows, sh.cols, false, vs);
        EXPECT_EQ(c1.n, 0) << "first: " << c1.first;
        const Count c2 =
            compare_row_kernels<bf16, bf16>(spec, x, sh.rows, sh.cols, false, vs, true);
        EXPECT_EQ(c2.n, 0) << "in place; first: " << c2.first;
      }
  }
}

// The vectorized transform and mask backward against the CPU where the last warp holds one block
// (an odd number of blocks), and against the one-warp-per-block kernel (legacy) on the same data.
TEST(CudaVecKernels, MaskBackwardOddBlocks) {
  QUEST_REQUIRE_CUDA();
  for (const int64_t rows : {int64_t(1), int64_t(3), int64_t(37)}) {
    const int64_t cols = 640, n = rows * cols;  // 5 blocks a row
    SCOPED_TRACE("rows " + std::to_string(rows));
    const auto x = make_input(rows, cols, 41 + uint64_t(rows));
    auto dx = upload(x);
    cuda::hadamard_rows(dx.get(), dx.get(), rows, cols, nullptr);
    const Count ch = compare_bits(cpu_ht(x, rows, cols), download(dx), cols);
    EXPECT_EQ(ch.n, 0) << "hadamard_rows; first: " << ch.first;

    Rng rng(rows);
    std::vector<uint64_t> words(size_t(rows * cols / 64));
    for (auto& w : words) w = rng.next_u64();
    auto mask = upload(words);
    const auto g = randn(n, 77);
    for (const int variant : {0, 1, 2}) {  // HT after, HT before and after, accumulate
      cuda::MaskBackward mb;
      mb.mask = mask.get();
      mb.ht_before = variant >= 1;
      mb.ht_after = true;
      const bool acc = variant == 2;
      auto src = upload(g);
      auto d_old = upload(randn(n, 5)), d_new = upload(randn(n, 5));
      cuda::qdetail::launch_mask_backward(src.get(), d_old.get(), acc, rows, cols, mb, nullptr,
                                          true);
      cuda::qdetail::launch_mask_backward(src.get(), d_new.get(), acc, rows, cols, mb, nullptr,
                                          false);
      const Count c = compare_bits(download(d_old), download(d_new), cols);
      EXPECT_EQ(c.n, 0) << "variant " << variant << "; first: " << c.first;
      auto gb_old = upload_bf16(g), gb_new = upload_bf16(g);
      mb.ht_before = variant == 1;
      cuda::qdetail::launch_mask_backward(gb_old.get(), gb_old.get(), false, rows, cols, mb,
                                          nullptr, true);
      cuda::qdetail::launch_mask_backward(gb_new.get(), gb_new.get(), false, rows, cols, mb,
                                          nullptr, false);
      const Count cb = compare_bits(download_bf16(gb_old), download_bf16(gb_new), cols);
      EXPECT_EQ(cb.n, 0) << "bf16 in place, variant " << variant << "; first: " << cb.first;
    }
  }
}

}  // namespace vec_kernels

}  // namespace
}  // namespace quest
