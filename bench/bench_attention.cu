// Causal flash attention on the GPU (issue 9): cuda::attention_forward / attention_backward at
// the training shapes, against a cuBLASLt bf16 product of about the same FLOPs (quest::cuda::Blas,
// the training path's matmul) in the same process, so the ratio says how close to the GEMM rate
// attention runs.
//
//   bench_attention [--iters 20] [--warmup 3] [--only 30m|200m|hd64]
//
// Shapes (64 x 512 tokens, the presets' micro-batch): 30M = 5 heads, 200M = 10 heads of
// head_dim 128; hd64 = 10 heads of 64 (for reference only). Each call is timed between CUDA
// events (median of --iters after --warmup calls); inputs (q, k ~ N(0, 1), v, dO) are random,
// never zero. FLOPs counted (the convention of issue 9's profile): forward 4 * T * T / 2 *
// head_dim per (batch, head), i.e. the two products QK^T and PV over the causal half; backward
// 2.5 times that (the five products of the FA2 backward, recomputation not counted). The GEMM
// column is y[4096, M] = x[4096, 4096] . w[M, 4096]^T with M chosen so that 2 * 4096 * 4096 * M
// matches the attention call's FLOPs (rounded to a multiple of 64).
// The fwd column is cuda::attention_forward as dispatched (the sm90 wgmma kernel on Hopper at
// head_dim 128, unless QUEST_ATTN_SM90=0). Where the sm90 kernel is available, each head_dim-128
// case also prints both forward kernels called directly: the mma.sync kernel ("old") and the
// sm90 kernel ("new"), and old / new.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "cuda_bench_util.cuh"
#include "ops/cuda/attention_forward_sm90.h"
#include "ops/cuda_ops.h"

namespace {

using quest::cuda::bf16;

#define CK(call) QUEST_CUDA_CHECK(call)

using quest::bench::dalloc;

struct Options {
  int iters = 20, warmup = 3;
  std::string only;
};



// Median milliseconds of one call of f (CUDA events on the default stream).
double time_ms(const Options& o, const std::function<void()>& f) {
  return quest::bench::EventTimer(o.warmup, o.iters).median_ms(f);
}

struct Case {
  const char* name;
  int64_t B, T, H, HD;
};

// The GEMM of about `flops`: y[4096, M] = x[4096, 4096] . w[M, 4096]^T.
double gemm_ms(const Options& o, quest::cuda::Blas& blas, double flops, int64_t* M_out) {
  const int64_t N = 4096, K = 4096;
  const int64_t M = std::max<int64_t>(64, int64_t(std::llround(flops / (2.0 * N * K) / 64)) * 64);
  bf16* x = dalloc<bf16>(size_t(N * K));
  bf16* w = dalloc<bf16>(size_t(M * K));
  bf16* y = dalloc<bf16>(size_t(N * M));
  quest::bench::fill_normal<bf16><<<1024, 256>>>(x, N * K, 11, 1.f);
  quest::bench::fill_normal<bf16><<<1024, 256>>>(w, M * K, 12, 0.02f);
  const double t = time_ms(o, [&] { blas.matmul_forward(y, x, w, N, K, M, nullptr); });
  CK(cudaDeviceSynchronize());
  cudaFree(x), cudaFree(w), cudaFree(y);
  *M_out = M;
  return t * (flops / (2.0 * N * K * M));  // scaled to exactly `flops`
}

std::vector<std::string> sm90_lines;  // printed after the table

std::string fmt_ms(double ms, double tflops) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.3f ms (%.0f TF/s)", ms, tflops);
  return buf;
}

void run_case(const Case& c, const Options& o, quest::cuda::Blas& blas) {
  const int64_t C = c.H * c.HD;
  bf16* qkv = dalloc<bf16>(size_t(c.B * c.T * 3 * C));
  bf16* out = dalloc<bf16>(size_t(c.B * c.T * C));
  bf16* dout = dalloc<bf16>(size_t(c.B * c.T * C));
  bf16* dqkv = dalloc<bf16>(size_t(c.B * c.T * 3 * C));
  float* lse = dalloc<float>(size_t(c.B * c.H * c.T));
  float* scratch =
      dalloc<float>(size_t(quest::cuda::attention_backward_scratch(c.B, c.T, c.H, c.HD)));
  quest::bench::fill_normal<bf16><<<1024, 256>>>(qkv, c.B * c.T * 3 * C, 1, 1.f);
  quest::bench::fill_normal<bf16><<<1024, 256>>>(dout, c.B * c.T * C, 2, 1.f);
  CK(cudaGetLastError());

  const double t_fwd = time_ms(o, [&] {
    quest::cuda::attention_forward(out, lse, qkv, c.B, c.T, c.H, c.HD, nullptr);
  });
  const double t_bwd = time_ms(o, [&] {
    quest::cuda::attention_backward(dqkv, dout, out, qkv, lse, c.B, c.T, c.H, c.HD, scratch,
                                    nullptr);
  });
  CK(cudaDeviceSynchronize());
  const double f_fwd = 4.0 * double(c.T) * double(c.T) / 2 * double(c.HD) * double(c.B * c.H);
  const double f_bwd = 2.5 * f_fwd;
  int64_t m_fwd = 0, m_bwd = 0;
  const double g_fwd = gemm_ms(o, blas, f_fwd, &m_fwd);
  const double g_bwd = gemm_ms(o, blas, f_bwd, &m_bwd);
  auto tf = [](double flops, double ms) { return flops / (ms * 1e-3) / 1e12; };
  std::printf("| %-5s | %2lld x %4lld | %2lld x %3lld | %6.1f | %7.3f %5.0f | %7.3f %5.0f | %4.2f | "
              "%7.3f %5.0f | %7.3f %5.0f | %4.2f |\n",
              c.name, (long long)c.B, (long long)c.T, (long long)c.H, (long long)c.HD, f_fwd / 1e9,
              t_fwd, tf(f_fwd, t_fwd), g_fwd, tf(f_fwd, g_fwd), t_fwd / g_fwd, t_bwd,
              tf(f_bwd, t_bwd), g_bwd, tf(f_bwd, g_bwd), t_bwd / g_bwd);
  if (c.HD == 128 && quest::cuda::attn::attention_forward_sm90_available()) {
    const double t_old = time_ms(o, [&] {
      quest::cuda::attn::attention_forward_mma(out, lse, qkv, c.B, c.T, c.H, c.HD, nullptr);
    });
    using quest::cuda::attn::Sm90Variant;
    const double t_new = time_ms(o, [&] {
      quest::cuda::attn::attention_forward_sm90(out, lse, qkv, c.B, c.T, c.H, c.HD, nullptr);
    });
    const double t_free = time_ms(o, [&] {
      quest::cuda::attn::attention_forward_sm90(out, lse, qkv, c.B, c.T, c.H, c.HD, nullptr,
                                                Sm90Variant::kNoPingPong);
    });
    const double t_nohint = time_ms(o, [&] {
      quest::cuda::attn::attention_forward_sm90(out, lse, qkv, c.B, c.T, c.H, c.HD, nullptr,
                                                Sm90Variant::kNoL2Hints);
    });
    // The memory floor: a device-to-device copy moving as many bytes (read + write) as the
    // forward must (qkv read once, out and lse written once).
    const double bytes = 2.0 * double(c.B * c.T * 3 * C) + 2.0 * double(c.B * c.T * C) +
                         4.0 * double(c.B * c.H * c.T);
    const size_t half = size_t(bytes / 2) / 16 * 16;
    char* cp_src = dalloc<char>(half);
    char* cp_dst = dalloc<char>(half);
    CK(cudaMemset(cp_src, 1, half));
    const double t_copy = time_ms(o, [&] {
      CK(cudaMemcpyAsync(cp_dst, cp_src, half, cudaMemcpyDeviceToDevice, nullptr));
    });
    CK(cudaDeviceSynchronize());
    cudaFree(cp_src), cudaFree(cp_dst);
    char floor_buf[160];
    std::snprintf(floor_buf, sizeof(floor_buf),
                  "; memory floor: D2D copy of the same %.0f MB %.3f ms (%.2f TB/s), sm90 at %.2f TB/s",
                  bytes / 1e6, t_copy, bytes / (t_copy * 1e-3) / 1e12, bytes / (t_new * 1e-3) / 1e12);
    sm90_lines.push_back(std::string(c.name) + ": forward mma.sync " + fmt_ms(t_old, tf(f_fwd, t_old)) +
                         ", sm90 wgmma " + fmt_ms(t_new, tf(f_fwd, t_new)) + ", old / new " +
                         std::to_string(t_old / t_new).substr(0, 4) + "x (sm90 variants: without ping-pong " +
                         fmt_ms(t_free, tf(f_fwd, t_free)) + ", without L2 hints " +
                         fmt_ms(t_nohint, tf(f_fwd, t_nohint)) + ")" + floor_buf);
  }
  std::fflush(stdout);
  for (void* p : std::initializer_list<void*>{qkv, out, dout, dqkv, lse, scratch}) cudaFree(p);
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i)
    if (!quest::bench::parse_timing_option(argc, argv, i, o.iters, o.warmup, o.only)) {
      std::fprintf(stderr, "usage: bench_attention [--iters 20] [--warmup 3] [--only 30m|200m|hd64]\n");
      return 2;
    }
  if (!quest::bench::timing_options_ok("bench_attention", o.iters, o.warmup)) return 2;
  try {
    cudaDeviceProp prop{};
    CK(cudaGetDeviceProperties(&prop, 0));
    std::printf("device: %s (%d SMs); median of %d calls after %d warm-up\n", prop.name,
                prop.multiProcessorCount, o.iters, o.warmup);
    std::printf("FLOPs: forward 2 * 2 * T * T / 2 * head_dim per (batch, head); backward 2.5x "
                "forward. GEMM: cuBLASLt bf16 of the same FLOPs (4096 x 4096 x M, time scaled)\n\n");
    std::printf("| case  |   B x T   |  H x hd  | GFLOP  | fwd ms  TF/s  | GEMM ms TF/s  | x    | "
                "bwd ms  TF/s  | GEMM ms TF/s  | x    |\n");
    std::printf("|-------|-----------|----------|--------|---------------|---------------|------|"
                "---------------|---------------|------|\n");
    quest::cuda::Blas blas;
    const std::vector<Case> cases = {
        {"30m", 64, 512, 5, 128}, {"200m", 64, 512, 10, 128}, {"hd64", 64, 512, 10, 64}};
    for (const Case& c : cases)
      if (o.only.empty() || o.only == c.name) run_case(c, o, blas);
    if (!sm90_lines.empty()) {
      std::printf("\nforward kernels called directly (sm90 dispatch %s):\n",
                  quest::cuda::attn::attention_forward_sm90_enabled() ? "on" : "off (QUEST_ATTN_SM90=0)");
      for (const std::string& l : sm90_lines) std::printf("  %s\n", l.c_str());
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_attention: %s\n", e.what());
    return 1;
  }
  return 0;
}
