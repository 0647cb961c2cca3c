// Does the int8 product's time depend on the bit patterns of its operands? The H100 runs
// s8_gemm_sm90 at its 700 W power cap, and a tensor core's power depends on how many operand bits
// toggle; this times the same kernel on the same 7B shapes with the codes rewritten:
//   signed  - the odd codes of W4A4 (lowbit_quantize of normal data: +-1 .. +-15, int8),
//   offset  - (c + 15) / 2 in [0, 15]: the upper 4 bits of every byte zero (an exact product of
//             the signed codes would need row-sum corrections; only the time is of interest),
//   mixed   - x offset, w signed,
//   zeros   - all zero (the floor).
// Each pattern is timed two ways: the median of single calls with L2 flushed before each
// (bench_lowbit_linear's regime), all of them first, then back-to-back calls (a sustained stream,
// the power cap's steady state); patterns in a rotated order each round. Ratios are against the
// signed codes of the same round.
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
    // Flushed rows first, all patterns, in a rotated order each round: a sustained burst heats the
    // GPU and leaves the next flushed timings 10-15% slow (session 11's table, where every pattern
    // but the first of a round followed another's burst, showed that as "offset codes are slower").
    constexpr int kFlushedRounds = 4, kSustainedRounds = 2, kCases = 4;
    std::printf("| tokens x K -> N      | codes  | flushed ms (rounds) | vs signed | sustained ms "
                "(rounds) | vs signed |\n");
    std::printf("|----------------------|--------|---------------------|-----------|--------------"
                "---------|-----------|\n");
    // One cell of `n` rounds: the times, or the signed pattern's time over them.
    auto cell = [](const double* t, const double* signed_t, int n, bool ratio) {
      std::string out;
      for (int round = 0; round < n; ++round) {
        char b[32];
        std::snprintf(b, sizeof b, ratio ? "%s%.3f" : "%s%.4f", round ? " " : "",
                      ratio ? signed_t[round] / t[round] : t[round]);
        out += b;
      }
      return out;
    };
    for (const quest::bench::S8Shape& s : quest::bench::kLlama7bShapes) {
      const quest::bench::W4A4Operands ops(s);  // the signed codes the others are made from
      int8_t* xc[kCases];
      int8_t* wc[kCases];
      for (int c = 0; c < kCases; ++c) {
        xc[c] = dalloc<int8_t>(size_t(s.T * s.K));
        wc[c] = dalloc<int8_t>(size_t(s.N * s.K));
        rewrite<<<1024, 256>>>(xc[c], ops.xc, s.T * s.K, cases[c].x);
        rewrite<<<1024, 256>>>(wc[c], ops.wc, s.N * s.K, cases[c].w);
      }
      QUEST_CUDA_CHECK(cudaDeviceSynchronize());
      auto product = [&](int c) {
        return [&, c] {
          quest::cuda::s8_gemm_sm90(ops.y, xc[c], ops.sx, wc[c], ops.sw, s.T, s.K, s.N, nullptr);
        };
      };
      double flushed[kCases][kFlushedRounds];
      for (int round = 0; round < kFlushedRounds; ++round)
        for (int i = 0; i < kCases; ++i) {
          const int c = (i + round) % kCases;
          flushed[c][round] = timer.median_ms(product(c));
        }
      double sustained[kCases][kSustainedRounds];
      for (int round = 0; round < kSustainedRounds; ++round)
        for (int i = 0; i < kCases; ++i) {
          const int c = (i + round) % kCases;
          sustained[c][round] = timer.back_to_back_ms(product(c), reps);
        }
      for (int c = 0; c < kCases; ++c)
        std::printf("| %4lld x %5lld -> %5lld | %-6s | %s | %s | %s | %s |\n", (long long)s.T,
                    (long long)s.K, (long long)s.N, cases[c].name,
                    cell(flushed[c], flushed[0], kFlushedRounds, false).c_str(),
                    cell(flushed[c], flushed[0], kFlushedRounds, true).c_str(),
                    cell(sustained[c], sustained[0], kSustainedRounds, false).c_str(),
                    cell(sustained[c], sustained[0], kSustainedRounds, true).c_str());
      std::fflush(stdout);
      for (int c = 0; c < kCases; ++c) cudaFree(xc[c]), cudaFree(wc[c]);
    }
    cudaFree(flush);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_s8_code_patterns: %s\n", e.what());
    return 1;
  }
  return 0;
}
