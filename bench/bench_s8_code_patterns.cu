// Does the int8 product's time depend on the bit patterns of its operands? The H100 runs
// s8_gemm_sm90 at its 700 W power cap, and a tensor core's power depends on how many operand bits
// toggle; this times the same kernel on the same 7B shapes with the codes rewritten:
//   signed  - the odd codes of W4A4 (lowbit_quantize of normal data: +-1 .. +-15, int8),
//   offset  - (c + 15) / 2 in [0, 15]: the upper 4 bits of every byte zero (an exact product of
//             the signed codes would need row-sum corrections; only the time is of interest),
//   mixed   - x offset, w signed,
//   zeros   - all zero (the floor).
// Each pattern is timed two ways, interleaved over 3 rounds: the median of single calls with L2
// flushed before each (bench_lowbit_linear's regime), and back-to-back calls (a sustained
// stream, the power cap's steady state). Ratios are against the signed codes of the same round.
//
//   bench_s8_code_patterns [--iters 30] [--warmup 5] [--reps 2000]
#include <cuda_runtime.h>

#include <cstdio>
#include <string>

#include "cuda_bench_util.cuh"
#include "quant/cuda/lowbit_gemm.h"
#include "quant/cuda/s8_gemm_sm90.h"
#include "quant/quant_spec.h"

namespace {

using quest::bench::dalloc;
using quest::cuda::bf16;

enum Pattern : int { kSigned = 0, kOffset = 1, kZeros = 2 };

__global__ void rewrite(int8_t* dst, const int8_t* src, int64_t n, int pattern) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    dst[i] = pattern == kSigned ? src[i] : pattern == kOffset ? int8_t((src[i] + 15) >> 1) : 0;
}

}  // namespace

int main(int argc, char** argv) {
  int iters = 30, warmup = 5, reps = 2000;
  std::string only;
  for (int i = 1; i < argc; ++i) {
    if (quest::bench::parse_timing_option(argc, argv, i, iters, warmup, only)) continue;
    if (std::string(argv[i]) == "--reps") {
      reps = std::stoi(quest::bench::next_arg(argc, argv, i));
      continue;
    }
    std::fprintf(stderr, "usage: bench_s8_code_patterns [--iters 30] [--warmup 5] [--reps 2000]\n");
    return 2;
  }
  if (!quest::bench::timing_options_ok("bench_s8_code_patterns", iters, warmup) || reps < 1)
    return 2;
  try {
    if (!quest::cuda::s8_gemm_sm90_available()) {
      std::printf("s8_gemm_sm90 is not available on this device\n");
      return 0;
    }
    const int64_t T = 4096;
    const struct { int64_t K, N; } shapes[] = {{4096, 4096}, {4096, 11008}, {11008, 4096}};
    const struct { const char* name; int x, w; } cases[] = {
        {"signed", kSigned, kSigned}, {"offset", kOffset, kOffset},
        {"mixed", kOffset, kSigned}, {"zeros", kZeros, kZeros}};
    const size_t flush_bytes = size_t(256) << 20;
    void* flush = dalloc<char>(flush_bytes);
    quest::bench::EventTimer timer(warmup, iters, flush, flush_bytes);
    cudaEvent_t e0, e1;
    QUEST_CUDA_CHECK(cudaEventCreate(&e0));
    QUEST_CUDA_CHECK(cudaEventCreate(&e1));
    std::printf("| tokens x K -> N      | codes  | round | flushed ms | vs signed | sustained ms | vs signed |\n");
    std::printf("|----------------------|--------|-------|------------|-----------|--------------|-----------|\n");
    for (const auto& s : shapes) {
      const int64_t K = s.K, N = s.N;
      bf16* x = dalloc<bf16>(size_t(T * K));
      float* w = dalloc<float>(size_t(N * K));
      bf16* y = dalloc<bf16>(size_t(T * N));
      int8_t *xc0 = dalloc<int8_t>(size_t(T * K)), *wc0 = dalloc<int8_t>(size_t(N * K));
      int8_t *xc = dalloc<int8_t>(size_t(T * K)), *wc = dalloc<int8_t>(size_t(N * K));
      float *sx = dalloc<float>(size_t(T)), *sw = dalloc<float>(size_t(N));
      quest::bench::fill_normal<bf16><<<1024, 256>>>(x, T * K, 1, 1.0f);
      quest::bench::fill_normal<float><<<1024, 256>>>(w, N * K, 2, 0.02f);
      const auto q = quest::cuda::LowbitQuant::from_spec(quest::QuantSpec::parse("hadamard-trust:4"));
      quest::cuda::lowbit_quantize(x, xc0, sx, nullptr, T, K, q, quest::cuda::LowbitRoute::kInt8, nullptr);
      quest::cuda::lowbit_quantize(w, wc0, sw, nullptr, N, K, q, quest::cuda::LowbitRoute::kInt8, nullptr);
      for (int round = 0; round < 3; ++round) {
        double base_flushed = 0, base_sustained = 0;
        for (const auto& c : cases) {
          rewrite<<<1024, 256>>>(xc, xc0, T * K, c.x);
          rewrite<<<1024, 256>>>(wc, wc0, N * K, c.w);
          QUEST_CUDA_CHECK(cudaDeviceSynchronize());
          auto f = [&] { quest::cuda::s8_gemm_sm90(y, xc, sx, wc, sw, T, K, N, nullptr); };
          const double flushed = timer.median_ms(f);
          for (int i = 0; i < reps / 10; ++i) f();
          QUEST_CUDA_CHECK(cudaEventRecord(e0));
          for (int i = 0; i < reps; ++i) f();
          QUEST_CUDA_CHECK(cudaEventRecord(e1));
          QUEST_CUDA_CHECK(cudaEventSynchronize(e1));
          float ms = 0;
          QUEST_CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
          const double sustained = ms / reps;
          if (c.x == kSigned && c.w == kSigned) base_flushed = flushed, base_sustained = sustained;
          std::printf("| %4lld x %5lld -> %5lld | %-6s | %5d | %10.4f | %8.3fx | %12.4f | %8.3fx |\n",
                      (long long)T, (long long)K, (long long)N, c.name, round + 1, flushed,
                      base_flushed / flushed, sustained, base_sustained / sustained);
          std::fflush(stdout);
        }
      }
      for (void* p : {(void*)x, (void*)w, (void*)y, (void*)xc0, (void*)wc0, (void*)xc, (void*)wc,
                      (void*)sx, (void*)sw})
        cudaFree(p);
    }
    cudaFree(flush);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_s8_code_patterns: %s\n", e.what());
    return 1;
  }
  return 0;
}
