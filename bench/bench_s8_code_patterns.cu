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
#include "s8_bench_operands.cuh"

namespace {

using quest::bench::dalloc;

enum Pattern : int { kSigned = 0, kOffset = 1, kZeros = 2 };

__global__ void rewrite(int8_t* dst, const int8_t* src, int64_t n, int pattern) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    dst[i] = pattern == kSigned ? src[i] : pattern == kOffset ? int8_t((src[i] + 15) >> 1) : 0;
}

}  // namespace

int main(int argc, char** argv) {
  int iters = 30, warmup = 5, reps = 2000;
  const char* name = "bench_s8_code_patterns";
  if (!quest::bench::parse_s8_bench_options(argc, argv, name, iters, warmup, reps)) return 2;
  try {
    if (!quest::cuda::s8_gemm_sm90_available()) {
      std::printf("s8_gemm_sm90 is not available on this device\n");
      return 0;
    }
    const struct { const char* name; int x, w; } cases[] = {
        {"signed", kSigned, kSigned}, {"offset", kOffset, kOffset},
        {"mixed", kOffset, kSigned}, {"zeros", kZeros, kZeros}};
    const size_t flush_bytes = size_t(256) << 20;
    void* flush = dalloc<char>(flush_bytes);
    quest::bench::EventTimer timer(warmup, iters, flush, flush_bytes);
    std::printf("| tokens x K -> N      | codes  | round | flushed ms | vs signed | sustained ms | vs signed |\n");
    std::printf("|----------------------|--------|-------|------------|-----------|--------------|-----------|\n");
    for (const quest::bench::S8Shape& s : quest::bench::kLlama7bShapes) {
      const quest::bench::W4A4Operands ops(s);  // the signed codes the others are made from
      int8_t* xc = dalloc<int8_t>(size_t(s.T * s.K));
      int8_t* wc = dalloc<int8_t>(size_t(s.N * s.K));
      for (int round = 0; round < 3; ++round) {
        double base_flushed = 0, base_sustained = 0;
        for (const auto& c : cases) {
          rewrite<<<1024, 256>>>(xc, ops.xc, s.T * s.K, c.x);
          rewrite<<<1024, 256>>>(wc, ops.wc, s.N * s.K, c.w);
          QUEST_CUDA_CHECK(cudaDeviceSynchronize());
          auto f = [&] {
            quest::cuda::s8_gemm_sm90(ops.y, xc, ops.sx, wc, ops.sw, s.T, s.K, s.N, nullptr);
          };
          const double flushed = timer.median_ms(f);
          const double sustained = timer.back_to_back_ms(f, reps);
          if (c.x == kSigned && c.w == kSigned) base_flushed = flushed, base_sustained = sustained;
          std::printf("| %4lld x %5lld -> %5lld | %-6s | %5d | %10.4f | %8.3fx | %12.4f | "
                      "%8.3fx |\n",
                      (long long)s.T, (long long)s.K, (long long)s.N, c.name, round + 1, flushed,
                      base_flushed / flushed, sustained, base_sustained / sustained);
          std::fflush(stdout);
        }
      }
      cudaFree(xc);
      cudaFree(wc);
    }
    cudaFree(flush);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_s8_code_patterns: %s\n", e.what());
    return 1;
  }
  return 0;
}
