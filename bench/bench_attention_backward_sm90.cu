// The causal attention backward at the training shapes: the mma.sync kernels
// (attention_backward_mma) against each variant of the Hopper wgmma kernels
// (attention_backward_sm90_config 1 .. 3), timed in the same process on the same inputs, with each
// variant's dQ and dK/dV kernels also timed alone, and the relative RMS difference of its dqkv
// from the mma.sync one (and the count of differing elements).
//
//   bench_attention_backward_sm90 [--iters 50] [--warmup 5] [--only 30m|200m|t1024]
//
// Shapes: 64 x 512 tokens (the presets' micro-batch), head_dim 128: 30M = 5 heads, 200M = 10
// heads; t1024 = 32 x 1024, 10 heads (reference only). Median of --iters calls between CUDA events
// after --warmup (bench_attention.cu's timing); inputs random, never zero; lse and out from
// attention_forward. FLOPs as bench_attention.cu: 2.5 x the forward's 4 * T * T / 2 * head_dim
// per (batch, head). Where the device is not sm_90 (or the binary lacks sm_90a code) only the
// mma.sync column is printed.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "cuda_bench_util.cuh"
#include "ops/cuda/attention_backward_sm90.h"
#include "ops/cuda_ops.h"

namespace {

using quest::cuda::bf16;
using quest::bench::dalloc;
#define CK(call) QUEST_CUDA_CHECK(call)

struct Options {
  int iters = 50, warmup = 5;
  std::string only;
};
struct Case {
  const char* name;
  int64_t B, T, H, HD;
};

std::vector<float> download_bf16(const bf16* p, size_t n) {
  std::vector<bf16> h(n);
  CK(cudaMemcpy(h.data(), p, n * sizeof(bf16), cudaMemcpyDeviceToHost));
  std::vector<float> f(n);
  for (size_t i = 0; i < n; ++i) f[i] = __bfloat162float(h[i]);
  return f;
}

void run_case(const Case& c, const Options& o, bool sm90) {
  const int64_t C = c.H * c.HD, n_qkv = c.B * c.T * 3 * C, n_out = c.B * c.T * C;
  bf16* qkv = dalloc<bf16>(size_t(n_qkv));
  bf16* out = dalloc<bf16>(size_t(n_out));
  bf16* dout = dalloc<bf16>(size_t(n_out));
  bf16* dqkv = dalloc<bf16>(size_t(n_qkv));
  bf16* dqkv2 = dalloc<bf16>(size_t(n_qkv));
  float* lse = dalloc<float>(size_t(c.B * c.H * c.T));
  float* scratch =
      dalloc<float>(size_t(quest::cuda::attention_backward_scratch(c.B, c.T, c.H, c.HD)));
  quest::bench::fill_normal<bf16><<<1024, 256>>>(qkv, n_qkv, 1, 1.f);
  quest::bench::fill_normal<bf16><<<1024, 256>>>(dout, n_out, 2, 1.f);
  CK(cudaGetLastError());
  quest::cuda::attention_forward(out, lse, qkv, c.B, c.T, c.H, c.HD, nullptr);
  CK(cudaDeviceSynchronize());

  quest::bench::EventTimer timer(o.warmup, o.iters);
  const double t_old = timer.median_ms([&] {
    quest::cuda::attention_backward_mma(dqkv, dout, out, qkv, lse, c.B, c.T, c.H, c.HD, scratch,
                                        nullptr);
  });
  const double f_bwd = 2.5 * 4.0 * double(c.T) * double(c.T) / 2 * double(c.HD) * double(c.B * c.H);
  auto tf = [&](double ms) { return f_bwd / (ms * 1e-3) / 1e12; };
  if (!sm90) {
    std::printf("| %-5s | %2lld x %4lld | %2lld x %3lld | mma.sync       | %7.3f %5.0f |   -   |\n",
                c.name, (long long)c.B, (long long)c.T, (long long)c.H, (long long)c.HD, t_old,
                tf(t_old));
  } else {
    std::printf("| %-5s | %2lld x %4lld | %2lld x %3lld | mma.sync       | %7.3f %5.0f |       |                 |\n",
                c.name, (long long)c.B, (long long)c.T, (long long)c.H, (long long)c.HD, t_old,
                tf(t_old));
    const auto b = download_bf16(dqkv, size_t(n_qkv));
    for (const int variant : {1, 2, 3}) {
      auto call = [&](int kernels) {
        quest::cuda::attention_backward_sm90_config(dqkv2, dout, out, qkv, lse, c.B, c.T, c.H,
                                                    c.HD, scratch, nullptr, variant, kernels);
      };
      CK(cudaMemset(dqkv2, 0xFF, size_t(n_qkv) * sizeof(bf16)));
      call(3);
      CK(cudaDeviceSynchronize());
      const auto a = download_bf16(dqkv2, size_t(n_qkv));
      double num = 0, den = 0;
      size_t diff = 0;
      for (size_t i = 0; i < a.size(); ++i) {
        num += double(a[i] - b[i]) * double(a[i] - b[i]), den += double(b[i]) * double(b[i]);
        diff += !(a[i] == b[i]);
      }
      const double t_new = timer.median_ms([&] { call(3); });
      const double t_dq = timer.median_ms([&] { call(1); });
      const double t_kv = timer.median_ms([&] { call(2); });
      std::printf("| %-5s | %2lld x %4lld | %2lld x %3lld | sm90 variant %d | %7.3f %5.0f | %5.2fx | dq %6.3f kv %6.3f | rel RMS vs mma %.1e, %zu elements differ |\n",
                  c.name, (long long)c.B, (long long)c.T, (long long)c.H, (long long)c.HD, variant,
                  t_new, tf(t_new), t_old / t_new, t_dq, t_kv, std::sqrt(num / den), diff);
    }
  }
  std::fflush(stdout);
  for (void* p : std::initializer_list<void*>{qkv, out, dout, dqkv, dqkv2, lse, scratch}) cudaFree(p);
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i)
    if (!quest::bench::parse_timing_option(argc, argv, i, o.iters, o.warmup, o.only)) {
      std::fprintf(stderr, "usage: bench_attention_backward_sm90 [--iters 50] [--warmup 5] [--only 30m|200m|t1024]\n");
      return 2;
    }
  if (!quest::bench::timing_options_ok("bench_attention_backward_sm90", o.iters, o.warmup)) return 2;
  try {
    cudaDeviceProp prop{};
    CK(cudaGetDeviceProperties(&prop, 0));
    const bool sm90 = quest::cuda::attention_backward_sm90_available();
    std::printf("device: %s (%d SMs); median of %d calls after %d warm-up; sm90 kernels %s\n",
                prop.name, prop.multiProcessorCount, o.iters, o.warmup,
                sm90 ? "available" : "NOT available");
    std::printf("FLOPs: 2.5 x forward (4 * T * T / 2 * head_dim per (batch, head))\n\n");
    std::printf("| case  |   B x T   |  H x hd  | kernels        | ms      TF/s  | vs mma | per kernel (ms)  | check |\n");
    std::printf("|-------|-----------|----------|----------------|---------------|--------|------------------|-------|\n");
    const std::vector<Case> cases = {
        {"30m", 64, 512, 5, 128}, {"200m", 64, 512, 10, 128}, {"t1024", 32, 1024, 10, 128}};
    for (const Case& c : cases)
      if (o.only.empty() || o.only == c.name) run_case(c, o, sm90);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_attention_backward_sm90: %s\n", e.what());
    return 1;
  }
  return 0;
}
