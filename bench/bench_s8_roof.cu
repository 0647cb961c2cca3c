// How close is the int8 product (s8_gemm_sm90) to what the tensor cores themselves give on the same
// shape, in the same regime? The "roof" kernels issue the product's instruction stream with
// nothing else: one CTA an SM, two consumer warpgroups, each k-block four m64n256k32 s8 wgmma a
// warpgroup (a 128 x 256 x 128 block), committed and waited as the product does (at most two
// k-blocks in flight), on a 4-stage ring of shared memory filled once with the product's own W4A4
// codes. No loads, no barriers, no epilogue. Two schedules:
//   tiles    - the product's: tiles of 128 x 256, nk = K / 128 k-blocks each, CTA b taking tiles
//              b, b + G, ... (what is left against the product is its loads, barriers and
//              epilogue; the roof keeps the last partial wave's idle SMs);
//   balanced - every CTA the same share of all k-blocks (the accumulators restarted at tile
//              boundaries): no partial wave, the most a schedule like stream-K could give.
// Each CTA reads clock64 and %globaltimer at its start and end, so the roof also reports the mean
// SM clock the kernel ran at, and its TOP/s as a fraction of the tensor cores' rate at that clock
// (4096 int8 multiply-adds a clock an SM, dense).
//
// Both regimes of bench_lowbit_linear and bench_s8_code_patterns: the median of single calls with
// L2 flushed before each (a 256 MiB memset), and back-to-back calls (the power cap's steady state).
//
//   bench_s8_roof [--iters 30] [--warmup 5] [--reps 2000]
#include <cuda_runtime.h>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "cuda_bench_util.cuh"
#include "ops/cuda/hopper.cuh"
#include "quant/cuda/wgmma_s8.cuh"
#include "s8_bench_operands.cuh"

namespace {

using quest::bench::dalloc;

constexpr int kStages = 4, kBK = 128, kBM = 128, kBN = 256;
// A stage: x rows (16 KiB; read only by the sm_90a device code), then w rows (32 KiB).
[[maybe_unused]] constexpr int kABytes = kBM * kBK;
constexpr int kStageBytes = (kBM + kBN) * kBK;
constexpr int kSmem = kStages * kStageBytes + 1024;
constexpr double kMacsPerClockPerSm = 4096;  // H100 dense int8

struct CtaClock {
  long long cycles;
  unsigned long long ns;
};

#if QUEST_SM90A_DEVICE  // its only caller's body (elsewhere an unused function warns, #177-D)
__device__ __forceinline__ unsigned long long global_ns() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}
#endif

// tiles x nk k-blocks of 128 x 256 x 128, scheduled as the header says. sink: one int a thread
// (an xor of accumulators, so the work is live); clocks: one entry a CTA.
__global__ void __launch_bounds__(256, 1)
    roof_kernel(const int8_t* __restrict__ xc, const int8_t* __restrict__ wc, int tiles, int nk,
                bool balanced, int* __restrict__ sink, CtaClock* __restrict__ clocks) {
#if QUEST_SM90A_DEVICE
  using namespace quest::cuda::hopper;
  extern __shared__ uint8_t smem_raw[];
  const uint32_t raw = smem_addr(smem_raw), base = (raw + 1023u) & ~1023u;
  int4* stage_mem = reinterpret_cast<int4*>(smem_raw + (base - raw));
  // Stage s: A = rows of x's codes, B = rows of w's codes (the bytes, in order: the swizzle only
  // permutes which codes meet, not how many toggle).
  for (int i = int(threadIdx.x); i < kStages * kStageBytes / 16; i += int(blockDim.x)) {
    const int s = i / (kStageBytes / 16), o = i % (kStageBytes / 16);
    stage_mem[i] = o < kABytes / 16
                       ? reinterpret_cast<const int4*>(xc + int64_t(s) * kABytes)[o]
                       : reinterpret_cast<const int4*>(wc + int64_t(s) * kBN * kBK)[o - kABytes / 16];
  }
  fence_proxy_async();
  __syncthreads();
  const long long c0 = clock64();
  const unsigned long long t0 = global_ns();

  const int c = int(threadIdx.x) / 128;
  int acc[128];
  int fold = 0;
  // n k-blocks into fresh accumulators, then folded into `fold`.
  auto block_run = [&](int n) {
#pragma unroll
    for (int r = 0; r < 128; ++r) acc[r] = 0;
    for (int kb = 0; kb < n; ++kb) {
      const uint32_t st = base + uint32_t(kb % kStages) * kStageBytes;
      const uint32_t a = st + uint32_t(c) * 64u * kBK, b = st + kABytes;
      fence_operand(acc);
      wgmma_fence();
#pragma unroll
      for (int k = 0; k < kBK / 32; ++k)
        quest::cuda::wgmma_s8_n256(acc, desc_kmajor(a + 32u * k), desc_kmajor(b + 32u * k));
      wgmma_commit();
      fence_operand(acc);
      wgmma_wait<1>();
    }
    wgmma_wait<0>();
    fence_operand(acc);
    fold ^= acc[0] ^ acc[127];
  };
  if (balanced) {
    const long long total = (long long)tiles * nk, per = (total + gridDim.x - 1) / gridDim.x;
    long long left = total - (long long)blockIdx.x * per;
    left = left < per ? left : per;
    for (; left > 0; left -= nk) block_run(int(left < nk ? left : nk));
  } else {
    for (int tile = int(blockIdx.x); tile < tiles; tile += int(gridDim.x)) block_run(nk);
  }
  sink[blockIdx.x * blockDim.x + threadIdx.x] = fold;
  __syncthreads();
  if (threadIdx.x == 0) clocks[blockIdx.x] = CtaClock{clock64() - c0, global_ns() - t0};
#endif
}

}  // namespace

int main(int argc, char** argv) {
  int iters = 30, warmup = 5, reps = 2000;
  if (!quest::bench::parse_s8_bench_options(argc, argv, "bench_s8_roof", iters, warmup, reps))
    return 2;
  try {
    if (!quest::cuda::s8_gemm_sm90_available()) {
      std::printf("s8_gemm_sm90 is not available on this device\n");
      return 0;
    }
    int sms = 0;
    QUEST_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    QUEST_CUDA_CHECK(
        cudaFuncSetAttribute(roof_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
    const size_t flush_bytes = size_t(256) << 20;
    void* flush = dalloc<char>(flush_bytes);
    quest::bench::EventTimer timer(warmup, iters, flush, flush_bytes);
    int* sink = dalloc<int>(size_t(sms) * 256);
    CtaClock* clocks = dalloc<CtaClock>(size_t(sms));
    std::vector<CtaClock> host(static_cast<size_t>(sms));
    // The mean SM clock of the last roof launch (all CTAs' cycles over all their nanoseconds).
    auto last_mhz = [&] {
      QUEST_CUDA_CHECK(cudaMemcpy(host.data(), clocks, host.size() * sizeof(CtaClock),
                                  cudaMemcpyDeviceToHost));
      double cyc = 0, ns = 0;
      for (const CtaClock& k : host) cyc += double(k.cycles), ns += double(k.ns);
      return ns > 0 ? cyc / ns * 1e3 : 0.0;
    };

    std::printf("device: %d SMs; W4A4 codes; TOP/s = 2 M K N / time; \"of clock\" = the roof's "
                "TOP/s over %d SMs x %.0f int8 MACs a clock at its mean SM clock\n\n",
                sms, sms, kMacsPerClockPerSm);
    std::printf("| tokens x K -> N      | regime    | product ms  TOP/s | roof tiles ms  TOP/s   MHz of clock | balanced ms  TOP/s   MHz | product / roof |\n");
    std::printf("|----------------------|-----------|-------------------|--------------------------------------|--------------------------|----------------|\n");
    // All flushed rows first: a sustained burst leaves the GPU at a lower clock for a while, which
    // made the next shape's first flushed timing read 15% slow when the regimes were interleaved.
    // Each shape's operands are quantized once, for both regimes.
    std::vector<std::unique_ptr<const quest::bench::W4A4Operands>> operands;
    for (const quest::bench::S8Shape& s : quest::bench::kLlama7bShapes)
      operands.push_back(std::make_unique<const quest::bench::W4A4Operands>(s));
    for (int regime = 0; regime < 2; ++regime) {
      for (const auto& op : operands) {
        const quest::bench::W4A4Operands& ops = *op;
        const quest::bench::S8Shape& s = ops.shape;
        const int tiles = int(((s.T + kBM - 1) / kBM) * ((s.N + kBN - 1) / kBN));
        const int nk = int((s.K + kBK - 1) / kBK);
        const double flop = 2.0 * double(s.T) * double(s.K) * double(s.N);
        auto tops = [&](double ms) { return flop / (ms * 1e-3) / 1e12; };
        auto roof = [&](bool balanced) {
          return [&, balanced] {
            roof_kernel<<<unsigned(sms), 256, kSmem>>>(ops.xc, ops.wc, tiles, nk, balanced, sink,
                                                       clocks);
            QUEST_CUDA_CHECK(cudaGetLastError());
          };
        };
        auto time = [&](const std::function<void()>& f) {
          return regime == 0 ? timer.median_ms(f) : timer.back_to_back_ms(f, reps);
        };
        const double t_prod = time([&] { ops.product(); });
        const double t_tiles = time(roof(false));
        const double mhz_tiles = last_mhz();
        const double t_bal = time(roof(true));
        const double mhz_bal = last_mhz();
        const double rate = double(sms) * kMacsPerClockPerSm * 2.0 * mhz_tiles * 1e6 / 1e12;
        std::printf("| %4lld x %5lld -> %5lld | %-9s | %7.4f %7.0f | %8.4f %7.0f %5.0f %5.1f%% | "
                    "%7.4f %6.0f %5.0f | %13.3fx |\n",
                    (long long)s.T, (long long)s.K, (long long)s.N,
                    regime == 0 ? "flushed" : "sustained", t_prod, tops(t_prod), t_tiles,
                    tops(t_tiles), mhz_tiles, 100.0 * tops(t_tiles) / rate, t_bal, tops(t_bal),
                    mhz_bal, t_tiles / t_prod);
        std::fflush(stdout);
      }
    }
    cudaFree(sink);
    cudaFree(clocks);
    cudaFree(flush);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_s8_roof: %s\n", e.what());
    return 1;
  }
  return 0;
}
