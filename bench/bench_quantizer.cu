// The activation quantizer of the training path on the GPU (issue 9): DeviceQuantizer's Half-form
// forward (bf16 x -> HT per 128-block, row RMS, grid, bf16 xq + trust-mask bits + step) and its
// backward (dx <- HT(mask . dx), bf16, in place), old kernels against new ones, in one process,
// with a device-to-device copy of the same bf16 tensor as the memory-bound baseline.
//
//   bench_quantizer [--spec hadamard-trust:4] [--iters 30] [--warmup 5] [--no-flush]
//
// Rows: the 30M, 200M and 7B row widths (K = 640, 1792; 1280, 3584; 4096, 11008), 32768 rows
// (64 x 512 tokens), 4096 for 7B. Each call is timed alone between CUDA events (median of
// --iters) with L2 flushed before it (a 256 MiB memset outside the timed region) unless
// --no-flush. GB/s counts the bytes each call must move: forward x read + xq written (2 bytes an
// entry each) + mask (1/8 byte) + step; backward dx read and written + mask read; copy: the
// tensor read and written. "vs copy" = GB/s / copy's GB/s. Paths:
//   old fwd:      row_quantize_kernel (RowQuantArgs::legacy), one CTA per row;
//   new fwd:    ht_grid_rows_kernel as DeviceQuantizer runs it (4 vectors a lane; 8 at 7B down);
//   new fwd S8: the same kernel forced to 8 vectors a lane (fewer warps per row);
//   new fwd G2: 4 vectors a lane, two virtual warps of the ordered sum at once;
//   old bwd:    ht_mask_kernel (one warp per block); new bwd: ht_mask_vec_kernel.
// Each column: ms, GB/s, ratio to the copy. Before timing, each case checks that every new path
// gives the old path's bits (xq, mask, step; dx).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "cuda_bench_util.cuh"
#include "ops/cuda_ops.h"
#include "quant/alpha.h"
#include "quant/cuda/cuda_quant.h"
#include "quant/cuda/kernels.h"
#include "quant/quant_spec.h"

namespace {

using quest::cuda::bf16;
namespace qd = quest::cuda::qdetail;

#define CK(call) QUEST_CUDA_CHECK(call)

using quest::bench::dalloc;
using Timer = quest::bench::EventTimer;

struct Case {
  const char* name;
  int64_t rows, K;
};

struct Options {
  std::string spec = "hadamard-trust:4";
  int iters = 30, warmup = 5;
  bool flush = true;
};


// Roughly normal bf16 values (sum of 4 uniforms) with 1% of them 10x larger (outliers, so the
// grid clips and the mask has bits), from a hash of the index.
__global__ void fill_bf16(bf16* p, int64_t n, uint64_t seed) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    uint64_t z = (uint64_t(i) + seed) * 0x9E3779B97F4A7C15ull;
    z ^= z >> 29, z *= 0xBF58476D1CE4E5B9ull, z ^= z >> 32;
    float s = 0.f;
    for (int k = 0; k < 4; ++k) s += float((z >> (16 * k)) & 0xffff) / 65536.f - 0.5f;
    if ((z >> 60) == 0 && ((z >> 56) & 15) < 3) s *= 10.f;  // ~1.2%
    p[i] = __float2bfloat16_rn(s * 1.7f);
  }
}


// DeviceQuantizer::forward_impl's arguments for a grid-family spec, Half form.
qd::RowQuantArgs half_form_args(const quest::QuantSpec& spec, int64_t rows, int64_t K,
                                uint64_t* mask, float* step) {
  const quest::MaskRule rule = spec.mask_rule();
  qd::RowQuantArgs a;
  a.rows = rows, a.cols = K, a.bits = spec.bits, a.unit = quest::kAlpha[spec.bits];
  a.rule = rule.type == quest::MaskRule::Type::None   ? 0
           : rule.type == quest::MaskRule::Type::Clip ? 1
                                                      : 2;
  a.clip_factor = float(rule.factor), a.trust = rule.factor;
  a.ht_in = true, a.ht_out = false, a.mask = mask, a.step = step;
  return a;
}

template <class T>
bool same_bytes(const T* a, const T* b, size_t n) {
  std::vector<T> ha(n), hb(n);
  CK(cudaMemcpy(ha.data(), a, n * sizeof(T), cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(hb.data(), b, n * sizeof(T), cudaMemcpyDeviceToHost));
  return std::memcmp(ha.data(), hb.data(), n * sizeof(T)) == 0;
}

void run_case(const Case& c, const quest::QuantSpec& spec, Timer& timer) {
  const int64_t R = c.rows, K = c.K, n = R * K, wpr = K / 64;
  bf16* x = dalloc<bf16>(size_t(n));
  bf16* q_old = dalloc<bf16>(size_t(n));
  bf16* q_new = dalloc<bf16>(size_t(n));
  bf16* g_old = dalloc<bf16>(size_t(n));
  bf16* g_new = dalloc<bf16>(size_t(n));
  uint64_t* m_old = dalloc<uint64_t>(size_t(R * wpr));
  uint64_t* m_new = dalloc<uint64_t>(size_t(R * wpr));
  float* s_old = dalloc<float>(size_t(R));
  float* s_new = dalloc<float>(size_t(R));
  fill_bf16<<<2048, 256>>>(x, n, 1 + uint64_t(K));
  fill_bf16<<<2048, 256>>>(g_old, n, 7 + uint64_t(K));
  CK(cudaMemcpy(g_new, g_old, size_t(n) * sizeof(bf16), cudaMemcpyDeviceToDevice));

  qd::RowQuantArgs a_old = half_form_args(spec, R, K, m_old, s_old), a_new = a_old;
  a_old.legacy = true;
  a_new.mask = m_new, a_new.step = s_new;
  qd::RowQuantArgs a_s8 = a_new, a_g2 = a_new;  // the other register slices
  a_s8.vec_variant = 2;
  a_g2.vec_variant = 3;
  quest::cuda::MaskBackward mb_old, mb_new;
  mb_old.mask = m_old, mb_new.mask = m_new;
  mb_old.ht_after = mb_new.ht_after = true;
  const auto F = qd::RowFamily::Grid;

  // Same bits first (one call each, fresh inputs).
  qd::launch_row_quantize(F, x, q_old, a_old, nullptr);
  qd::launch_row_quantize(F, x, q_new, a_new, nullptr);
  qd::launch_mask_backward(g_old, g_old, false, R, K, mb_old, nullptr, true);
  qd::launch_mask_backward(g_new, g_new, false, R, K, mb_new, nullptr, false);
  CK(cudaDeviceSynchronize());
  const bool fwd_same = same_bytes(q_old, q_new, size_t(n)) &&
                        same_bytes(m_old, m_new, size_t(R * wpr)) &&
                        same_bytes(s_old, s_new, size_t(R));
  const bool bwd_same = same_bytes(g_old, g_new, size_t(n));
  auto same_as_old = [&](const qd::RowQuantArgs& a) {
    CK(cudaMemset(q_new, 0xff, size_t(n) * sizeof(bf16)));
    qd::launch_row_quantize(F, x, q_new, a, nullptr);
    CK(cudaDeviceSynchronize());
    return same_bytes(q_old, q_new, size_t(n)) && same_bytes(s_old, s_new, size_t(R)) &&
           same_bytes(m_old, m_new, size_t(R * wpr));
  };
  const bool s8_same = same_as_old(a_s8), g2_same = same_as_old(a_g2);

  const double t_copy = timer.median_ms([&] {
    CK(cudaMemcpyAsync(q_new, x, size_t(n) * sizeof(bf16), cudaMemcpyDeviceToDevice, nullptr));
  });
  const double t_fold = timer.median_ms([&] { qd::launch_row_quantize(F, x, q_old, a_old, nullptr); });
  const double t_fnew = timer.median_ms([&] { qd::launch_row_quantize(F, x, q_new, a_new, nullptr); });
  const double t_fs8 = timer.median_ms([&] { qd::launch_row_quantize(F, x, q_new, a_s8, nullptr); });
  const double t_fg2 = timer.median_ms([&] { qd::launch_row_quantize(F, x, q_new, a_g2, nullptr); });
  const double t_bold = timer.median_ms(
      [&] { qd::launch_mask_backward(g_old, g_old, false, R, K, mb_old, nullptr, true); });
  const double t_bnew = timer.median_ms(
      [&] { qd::launch_mask_backward(g_new, g_new, false, R, K, mb_new, nullptr, false); });
  CK(cudaDeviceSynchronize());

  const double e = double(n);
  const double b_copy = 4.0 * e, b_fwd = 4.0 * e + e / 8.0 + 4.0 * double(R),
               b_bwd = 4.0 * e + e / 8.0;
  auto gbs = [](double bytes, double ms) { return bytes / (ms * 1e-3) / 1e9; };
  const double copy = gbs(b_copy, t_copy);
  auto col = [&](double ms, double bytes) {
    std::printf(" %6.3f %5.0f %4.2f |", ms, gbs(bytes, ms), gbs(bytes, ms) / copy);
  };
  std::printf("| %-10s | %5lld | %5lld | %6.3f %5.0f |", c.name, (long long)R, (long long)K, t_copy,
              copy);
  col(t_fold, b_fwd), col(t_fnew, b_fwd), col(t_fs8, b_fwd), col(t_fg2, b_fwd);
  col(t_bold, b_bwd), col(t_bnew, b_bwd);
  std::printf(" %s %s %s %s |\n", fwd_same ? "yes" : "NO", s8_same ? "yes" : "NO",
              g2_same ? "yes" : "NO", bwd_same ? "yes" : "NO");
  std::fflush(stdout);
  for (void* p : std::initializer_list<void*>{x, q_old, q_new, g_old, g_new, m_old, m_new, s_old,
                                              s_new})
    cudaFree(p);
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&] { return quest::bench::next_arg(argc, argv, i); };
    if (a == "--spec")
      o.spec = next();
    else if (a == "--iters")
      o.iters = std::max(1, std::atoi(next().c_str()));
    else if (a == "--warmup")
      o.warmup = std::max(0, std::atoi(next().c_str()));
    else if (a == "--no-flush")
      o.flush = false;
    else {
      std::fprintf(stderr,
                   "usage: bench_quantizer [--spec hadamard-trust:4] [--iters 30] [--warmup 5] "
                   "[--no-flush]\n");
      return 2;
    }
  }
  try {
    const quest::QuantSpec spec = quest::QuantSpec::parse(o.spec);
    if (!spec.hadamard || !(spec.kind == quest::QuantKind::Ste ||
                            spec.kind == quest::QuantKind::Clip ||
                            spec.kind == quest::QuantKind::Trust)) {
      std::fprintf(stderr, "bench_quantizer: a hadamard- grid spec is needed (ste, clip, trust)\n");
      return 2;
    }
    cudaDeviceProp prop{};
    CK(cudaGetDeviceProperties(&prop, 0));
    std::printf("device: %s (%d SMs), spec %s, median of %d calls%s\n", prop.name,
                prop.multiProcessorCount, spec.to_string().c_str(), o.iters,
                o.flush ? ", L2 flushed before each" : "");
    const size_t flush_bytes = size_t(256) << 20;
    void* flush = dalloc<char>(flush_bytes);
    Timer timer(o.warmup, o.iters, o.flush ? flush : nullptr, flush_bytes);
    std::printf(
        "| case       |  rows |     K | copy ms  GB/s | old fwd: ms GB/s vs copy | new fwd | "
        "new fwd S8 | new fwd G2 | old bwd | new bwd | same: new S8 G2 bwd |\n");
    const Case cases[] = {{"30M qkv", 32768, 640},   {"30M down", 32768, 1792},
                          {"200M qkv", 32768, 1280}, {"200M down", 32768, 3584},
                          {"7B qkv", 4096, 4096},    {"7B down", 4096, 11008}};
    for (const Case& c : cases) run_case(c, spec, timer);
    cudaFree(flush);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_quantizer: %s\n", e.what());
    return 1;
  }
  return 0;
}
