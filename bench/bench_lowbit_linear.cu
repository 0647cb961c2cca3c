// One quantized linear layer's forward on the GPU (issue 9): the low-bit route
//   [HT + RMS + quantize of the activations to codes] + [low-bit product + scales -> bf16]
// (weights quantized beforehand, once per optimizer step in training) against cuBLASLt's bf16
// product (quest::cuda::Blas, the training path's forward) of the same shape, in one process.
//
//   bench_lowbit_linear [--bits 4] [--iters 30] [--warmup 5] [--autotune] [--no-flush]
//                       [--sustained REPS] [--stream REPS | --paired ROUNDS] [--only 7b|presets]
//                       [--scratch-mib 256]
//
// Shapes (tokens x K -> N, y[tokens, N] = x[tokens, K] . W[N, K]^T):
//   7B:  tokens 4096; (K, N) = (4096, 4096), (4096, 11008), (11008, 4096)
//   30M / 200M presets: tokens 32768 (64 x 512); qkv, o, w1 (= w2), down of d = 640 / 1280.
// Each case is timed per call between CUDA events (median of --iters), with L2 flushed before
// each call (a 256 MiB memset outside the timed region) unless --no-flush; --sustained REPS
// times REPS back-to-back calls instead (mean, no flush: a stream of layers at the power cap, the
// regime of training, where the int8 product's speed depends on its codes' bits). --stream REPS
// replaces the table by the headline columns (bf16; fastq + product; exact quantizer + product)
// timed as REPS back-to-back calls over kStreamLayers layers, each with its own activations,
// weights, codes and output (together several times L2), call i on layer i % kStreamLayers: a
// model's forward, where every layer's operands come from memory and the GPU runs at its power
// cap; three rounds, the paths interleaved in each. --paired ROUNDS times the same stream with
// the paths interleaved finely: ROUNDS rounds, each one pass of every path over the layers (a
// few ms), the paths' order rotated, events between the passes: every path sees the same clock
// phases of the power controller (which last 100-300 ms), so the ratio is that of the work, not
// of the phases a path's timing hit; it prints the ratio over all rounds and its spread over
// windows of consecutive rounds. Both stream modes also print the mean SM clock and board power
// each path (or, paired, all of them) ran at: bench/clock_sampler.h. TOP/s counts
// 2 * tokens * K * N operations for every column, quantization included where it is timed.
// Columns: bf16 = Blas::matmul_forward; int8 = lowbit_quantize + LowbitGemm::forward (kInt8 with
// the cuBLASLt kernel forced), with its parts (quant: lowbit_quantize as it runs by default, the
// row-team kernel; staged: its kStagedRows kernels; IMMA sums, scale pass) timed alone;
// sm90 (sm_90 devices) = our s8_gemm_sm90 product with the scales in its epilogue, alone with each
// tile and schedule (128x256, 128x256 persistent: 256p, 128x128, the ping-pong 128x128pp and
// 64x256pp; the TOP/s of the one LowbitGemm
// picks, marked *), and quant + sm90 =
// lowbit_quantize + LowbitGemm::forward (kInt8, kSm90); fp8 = lowbit_quantize +
// LowbitGemm::forward (kFp8) and its product alone (only for bits <= 3); fastq =
// lowbit_quantize_fast (the forward-only quantizer, codes within a level of lowbit_quantize's near
// grid boundaries) alone, and fq+prod = it + LowbitGemm::forward (kInt8, the default kernel);
// floor = a kernel that only reads x and writes a byte an entry (no quantizer can beat it).
// The int8 columns run on offset codes with their row sums (quant/cuda/offset_codes.h; staged:
// signed, its kernels write no others); a line per 7B case gives fq+prod on signed codes.
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "clock_sampler.h"
#include "core/rng.h"
#include "cuda_bench_util.cuh"
#include "ops/cuda_ops.h"
#include "quant/cuda/lowbit_gemm.h"
#include "quant/cuda/s8_gemm_sm90.h"
#include "quant/quant_spec.h"

namespace {

using quest::cuda::bf16;
using quest::cuda::Int8Kernel;
using quest::cuda::S8Sm90Tile;
using quest::cuda::LowbitGemm;
using quest::cuda::LowbitQuant;
using quest::cuda::LowbitRoute;

#define CK(call) QUEST_CUDA_CHECK(call)

using quest::bench::dalloc;
using Timer = quest::bench::EventTimer;

struct Case {
  const char* name;
  int64_t tokens, K, N;
};

struct Options {
  int bits = 4, iters = 30, warmup = 5;
  bool autotune = false, flush = true;
  int sustained = 0;  // > 0: back-to-back calls of each case (--sustained REPS)
  int stream = 0;     // > 0: back-to-back calls over distinct layers (--stream REPS)
  int paired = 0;     // > 0: the stream's paths interleaved in that many rounds (--paired ROUNDS)
  std::string only;
  size_t scratch_mib = 256;
};




// The memory floor of a quantizer: 8 bf16 entries in (16 bytes), their high bytes out (8).
__global__ void high_bytes(const uint4* __restrict__ x, uint2* __restrict__ out, int64_t n8) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n8;
       i += int64_t(gridDim.x) * blockDim.x) {
    const uint4 u = x[i];
    out[i] = make_uint2(__byte_perm(u.x, u.y, 0x7531), __byte_perm(u.z, u.w, 0x7531));
  }
}

void run_case(const Case& c, const Options& o, Timer& timer, quest::cuda::Blas& blas,
              LowbitGemm& gemm) {
  const int64_t T = c.tokens, K = c.K, N = c.N;
  bf16* x = dalloc<bf16>(size_t(T * K));
  float* w = dalloc<float>(size_t(N * K));
  bf16* wb = dalloc<bf16>(size_t(N * K));
  bf16* y = dalloc<bf16>(size_t(T * N));
  int8_t* xc = dalloc<int8_t>(size_t(T * K));
  int8_t* wc8 = dalloc<int8_t>(size_t(N * K));  // offset codes (the int8 route's form)
  int8_t* wcs = dalloc<int8_t>(size_t(N * K));  // signed codes (for the comparison)
  int32_t* xsum = dalloc<int32_t>(size_t(T));
  int32_t* wsum = dalloc<int32_t>(size_t(N));
  int8_t* wcf = dalloc<int8_t>(size_t(N * K));
  int32_t* acc = dalloc<int32_t>(size_t(T * N));
  float* sx = dalloc<float>(size_t(T));
  float* sw8 = dalloc<float>(size_t(N));
  float* swf = dalloc<float>(size_t(N));
  quest::bench::fill_normal<bf16><<<1024, 256>>>(x, T * K, 1, 1.0f);
  quest::bench::fill_normal<float><<<1024, 256>>>(w, N * K, 2, 0.02f);
  quest::cuda::to_bf16(wb, w, N * K, nullptr);
  const LowbitQuant q = LowbitQuant::from_spec(
      quest::QuantSpec::parse("hadamard-trust:" + std::to_string(o.bits)));
  const bool fp8 = quest::cuda::lowbit_supported(LowbitRoute::kFp8, o.bits);
  quest::cuda::lowbit_quantize(w, wc8, sw8, nullptr, N, K, q, LowbitRoute::kInt8, nullptr,
                               quest::cuda::LowbitQuantKernel::kAuto, wsum);
  quest::cuda::lowbit_quantize(w, wcs, sw8, nullptr, N, K, q, LowbitRoute::kInt8, nullptr);
  const quest::cuda::OffsetCodes off{xsum, wsum, o.bits, o.bits};
  auto quantize_x = [&] {
    quest::cuda::lowbit_quantize(x, xc, sx, nullptr, T, K, q, LowbitRoute::kInt8, nullptr,
                                 quest::cuda::LowbitQuantKernel::kAuto, xsum);
  };
  if (fp8) quest::cuda::lowbit_quantize(w, wcf, swf, nullptr, N, K, q, LowbitRoute::kFp8, nullptr);
  CK(cudaDeviceSynchronize());

  const double ops = 2.0 * double(T) * double(K) * double(N);
  auto tops = [&](double ms) { return ops / (ms * 1e-3) / 1e12; };

  const double t_bf16 = timer.ms([&] { blas.matmul_forward(y, x, wb, T, K, N, nullptr); });
  const double t_q8 = timer.ms(quantize_x);
  const double t_q8s = timer.ms([&] {
    quest::cuda::lowbit_quantize(x, xc, sx, nullptr, T, K, q, LowbitRoute::kInt8, nullptr,
                                 quest::cuda::LowbitQuantKernel::kStagedRows);
  });
  quantize_x();  // the staged kernel wrote signed codes: the products below read offset ones
  const double t_imma = timer.ms([&] { gemm.int8_sums(acc, xc, wc8, T, K, N, nullptr); });
  const double t_scale =
      timer.ms([&] { quest::cuda::lowbit_scale_int32(y, acc, sx, sw8, T, N, nullptr, &off, K); });
  gemm.set_int8_kernel(Int8Kernel::kCublasLt);
  const double t_int8 = timer.ms([&] {
    quantize_x();
    gemm.forward(y, xc, sx, wc8, sw8, T, K, N, LowbitRoute::kInt8, nullptr, &off);
  });
  // Our sm90 kernel: the product alone with each tile (codes and steps of the last quantization),
  // then quantization + LowbitGemm::forward through it.
  const bool sm90 = quest::cuda::s8_gemm_sm90_available();
  constexpr int kNT = 5;
  constexpr S8Sm90Tile kTiles[kNT] = {S8Sm90Tile::k128x256, S8Sm90Tile::k128x256p,
                                      S8Sm90Tile::k128x128, S8Sm90Tile::k128x128pp,
                                      S8Sm90Tile::k64x256pp};
  double t_tile[kNT] = {}, t_sm90 = 0;
  // The picked tile with the tile order's bands of 1 (row tile major), 4, 8 and 16 row tiles.
  constexpr int kNG = 4;
  constexpr int kBands[kNG] = {1, 4, 8, 16};
  double t_band[kNG] = {};
  S8Sm90Tile pick = S8Sm90Tile::kAuto;
  if (sm90) {
    for (int i = 0; i < kNT; ++i)
      t_tile[i] = timer.ms([&] {
        quest::cuda::s8_gemm_sm90(y, xc, sx, wc8, sw8, T, K, N, nullptr, kTiles[i], 0, &off);
      });
    pick = quest::cuda::s8_gemm_sm90_tile(T, K, N);
    for (int i = 0; i < kNG; ++i)
      t_band[i] = timer.ms([&] {
        quest::cuda::s8_gemm_sm90(y, xc, sx, wc8, sw8, T, K, N, nullptr, pick, kBands[i], &off);
      });
    gemm.set_int8_kernel(Int8Kernel::kSm90);
    t_sm90 = timer.ms([&] {
      quantize_x();
      gemm.forward(y, xc, sx, wc8, sw8, T, K, N, LowbitRoute::kInt8, nullptr, &off);
    });
  }
  // The forward-only quantizer (lowbit_quantize_fast) alone and in front of the same product,
  // and the memory floor of any quantizer: a kernel that reads x and writes one byte an entry.
  double t_qf = 0, t_fast = 0, t_floor = 0, t_fast_signed = 0;
  if (quest::cuda::lowbit_quantize_fast_supports(K, q)) {
    t_floor = timer.ms([&] {
      high_bytes<<<1024, 256>>>(reinterpret_cast<const uint4*>(x), reinterpret_cast<uint2*>(xc),
                                T * K / 8);
      CK(cudaGetLastError());
    });
    t_qf = timer.ms([&] { quest::cuda::lowbit_quantize_fast(x, xc, sx, T, K, q, nullptr, xsum); });
    t_fast = timer.ms([&] {
      quest::cuda::lowbit_quantize_fast(x, xc, sx, T, K, q, nullptr, xsum);
      gemm.forward(y, xc, sx, wc8, sw8, T, K, N, LowbitRoute::kInt8, nullptr, &off);
    });
    t_fast_signed = timer.ms([&] {
      quest::cuda::lowbit_quantize_fast(x, xc, sx, T, K, q, nullptr);
      gemm.forward(y, xc, sx, wcs, sw8, T, K, N, LowbitRoute::kInt8, nullptr);
    });
  }
  gemm.set_int8_kernel(Int8Kernel::kAuto);
  double t_fp8 = 0, t_fp8_gemm = 0;
  std::string fp8_error;
  if (fp8) try {
    quest::cuda::lowbit_quantize(x, xc, sx, nullptr, T, K, q, LowbitRoute::kFp8, nullptr);
    t_fp8_gemm = timer.ms(
        [&] { gemm.forward(y, xc, sx, wcf, swf, T, K, N, LowbitRoute::kFp8, nullptr); });
    t_fp8 = timer.ms([&] {
      quest::cuda::lowbit_quantize(x, xc, sx, nullptr, T, K, q, LowbitRoute::kFp8, nullptr);
      gemm.forward(y, xc, sx, wcf, swf, T, K, N, LowbitRoute::kFp8, nullptr);
    });
  } catch (const std::exception& e) {
    fp8_error = e.what();
  }
  CK(cudaDeviceSynchronize());

  std::printf("| %-14s | %5lld | %5lld | %5lld | %7.3f %6.0f | %7.3f %6.0f %5.2fx | %6.3f %6.3f %6.3f %6.3f |",
              c.name, (long long)T, (long long)K, (long long)N, t_bf16, tops(t_bf16), t_int8,
              tops(t_int8), t_bf16 / t_int8, t_q8, t_q8s, t_imma, t_scale);
  if (sm90) {
    double t_pick = 0;
    for (int i = 0; i < kNT; ++i) {
      std::printf(" %6.3f%s", t_tile[i], pick == kTiles[i] ? "*" : " ");
      if (pick == kTiles[i]) t_pick = t_tile[i];
    }
    std::printf(" %5.0f | %7.3f %6.0f %5.2fx |", tops(t_pick), t_sm90, tops(t_sm90),
                t_bf16 / t_sm90);
  } else {
    std::printf("      -       -       -       -       -      - |       -      -     - |");
  }
  if (t_fast > 0)
    std::printf(" %6.3f %6.3f %7.3f %6.0f %5.2fx |", t_floor, t_qf, t_fast, tops(t_fast),
                t_bf16 / t_fast);
  else
    std::printf("      -      -       -      -     - |");
  if (fp8 && fp8_error.empty())
    std::printf(" %7.3f %6.0f %5.2fx | %6.3f %6.0f |\n", t_fp8, tops(t_fp8), t_bf16 / t_fp8,
                t_fp8_gemm, tops(t_fp8_gemm));
  else
    std::printf("       -      -     - |      -      - |\n");
  if (!fp8_error.empty()) std::printf("  fp8 route: %s\n", fp8_error.c_str());
  if (sm90) {
    std::printf("  %s, product by tile order (bands of row tiles; default %d):", c.name,
                quest::cuda::s8_gemm_sm90_group_rows(T, K, N));
    for (int i = 0; i < kNG; ++i) std::printf(" %d: %.3f ms", kBands[i], t_band[i]);
    std::printf("\n");
  }
  if (t_fast_signed > 0)
    std::printf("  %s, fq+prod on signed codes (the form before offset codes): %.4f ms, %.2fx bf16; "
                "offset codes %.3fx faster\n",
                c.name, t_fast_signed, t_bf16 / t_fast_signed, t_fast_signed / t_fast);
  std::fflush(stdout);

  for (void* p : std::initializer_list<void*>{x, w, wb, y, xc, wc8, wcs, wcf, acc, sx, sw8, swf,
                                              xsum, wsum})
    cudaFree(p);
}

// --stream: the layer as one of kStreamLayers distinct layers called in turn (see the header).
constexpr int kStreamLayers = 8;
constexpr int kStreamRounds = 3;
constexpr int kPairedWindow = 16;  // rounds per window of --paired's spread (~40-70 ms at 7B)

// --paired: ms[path][round] of bf16, [fastq + product,] exact q + product. Each path's mean ms a
// call, its ratio to bf16 over all rounds, and the spread of that ratio over windows of
// kPairedWindow consecutive rounds (min / median / max).
void print_paired(const std::vector<std::vector<float>>& ms, bool fast) {
  const size_t rounds = ms[0].size(), windows = std::max<size_t>(1, rounds / kPairedWindow);
  auto sum = [&](size_t p, size_t r0, size_t r1) {
    double t = 0;
    for (size_t r = r0; r < std::min(r1, rounds); ++r) t += ms[p][r];
    return t;
  };
  const double calls = double(rounds) * kStreamLayers;
  std::printf(" %6.4f |", sum(0, 0, rounds) / calls);
  if (!fast) std::printf("      -       -                     - |");
  for (size_t p = 1; p < ms.size(); ++p) {
    std::vector<double> ratio;
    for (size_t w = 0; w < windows; ++w) {
      const size_t r0 = w * kPairedWindow, r1 = w + 1 == windows ? rounds : r0 + kPairedWindow;
      ratio.push_back(sum(0, r0, r1) / sum(p, r0, r1));
    }
    std::sort(ratio.begin(), ratio.end());
    std::printf(" %6.4f %5.2fx %5.2f / %5.2f / %5.2f |", sum(p, 0, rounds) / calls,
                sum(0, 0, rounds) / sum(p, 0, rounds), ratio.front(), ratio[ratio.size() / 2],
                ratio.back());
  }
  std::printf("\n");
}

// Mean SM clock and power of the samples filed under tag, as "1755 MHz 690 W" (or "-").
std::string clock_note(quest::bench::ClockSampler& clocks, int tag) {
  const quest::bench::ClockSampler::Mean m = clocks.take(tag);
  if (m.samples == 0) return "-";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.0f MHz %.0f W", m.mhz, m.watts);
  return buf;
}

// notes: gets a line with the clocks each path ran at (when NVML is there).
void run_stream_case(const Case& c, const Options& o, Timer& timer, quest::cuda::Blas& blas,
                     LowbitGemm& gemm, quest::bench::ClockSampler& clocks,
                     std::vector<std::string>& notes) {
  const int64_t T = c.tokens, K = c.K, N = c.N;
  struct Layer {
    bf16 *x, *wb, *y;
    int8_t *xc, *wc;
    float *sx, *sw;
    int32_t *xsum, *wsum;
  };
  const LowbitQuant q = LowbitQuant::from_spec(
      quest::QuantSpec::parse("hadamard-trust:" + std::to_string(o.bits)));
  std::vector<Layer> layers(kStreamLayers);
  for (int l = 0; l < kStreamLayers; ++l) {
    Layer& L = layers[size_t(l)];
    L = {dalloc<bf16>(size_t(T * K)),   dalloc<bf16>(size_t(N * K)), dalloc<bf16>(size_t(T * N)),
         dalloc<int8_t>(size_t(T * K)), dalloc<int8_t>(size_t(N * K)), dalloc<float>(size_t(T)),
         dalloc<float>(size_t(N)),      dalloc<int32_t>(size_t(T)),   dalloc<int32_t>(size_t(N))};
    quest::bench::fill_normal<bf16><<<1024, 256>>>(L.x, T * K, 10 + 2 * l, 1.0f);
    quest::bench::fill_normal<bf16><<<1024, 256>>>(L.wb, N * K, 11 + 2 * l, 0.02f);
    // The weights' codes, quantized once per optimizer step in training: not timed.
    quest::cuda::lowbit_quantize(L.wb, L.wc, L.sw, nullptr, N, K, q, LowbitRoute::kInt8, nullptr,
                                 quest::cuda::LowbitQuantKernel::kAuto, L.wsum);
  }
  CK(cudaDeviceSynchronize());
  auto at = [&](int i) -> const Layer& { return layers[size_t(i % kStreamLayers)]; };
  auto product = [&](const Layer& L) {
    const quest::cuda::OffsetCodes off{L.xsum, L.wsum, o.bits, o.bits};
    gemm.forward(L.y, L.xc, L.sx, L.wc, L.sw, T, K, N, LowbitRoute::kInt8, nullptr, &off);
  };
  const bool fast = quest::cuda::lowbit_quantize_fast_supports(K, q);
  const auto bf16_call = [&](int i) {
    blas.matmul_forward(at(i).y, at(i).x, at(i).wb, T, K, N, nullptr);
  };
  const auto fast_call = [&](int i) {
    const Layer& L = at(i);
    quest::cuda::lowbit_quantize_fast(L.x, L.xc, L.sx, T, K, q, nullptr, L.xsum);
    product(L);
  };
  const auto exact_call = [&](int i) {
    const Layer& L = at(i);
    quest::cuda::lowbit_quantize(L.x, L.xc, L.sx, nullptr, T, K, q, LowbitRoute::kInt8, nullptr,
                                 quest::cuda::LowbitQuantKernel::kAuto, L.xsum);
    product(L);
  };
  std::printf("| %-14s |", c.name);
  if (o.paired > 0) {
    std::vector<std::function<void(int)>> paths = {bf16_call, exact_call};
    if (fast) paths.insert(paths.begin() + 1, fast_call);
    clocks.tag(0);
    const auto ms = timer.interleaved_ms(paths, kStreamLayers, o.paired);
    clocks.tag(-1);
    print_paired(ms, fast);
    if (clocks.available())
      notes.push_back(std::string(c.name) + ": all paths interleaved " + clock_note(clocks, 0));
  } else {
    for (int r = 0; r < kStreamRounds; ++r) {
      clocks.tag(0);
      const double t_bf16 = timer.stream_ms(bf16_call, o.stream);
      clocks.tag(1);
      const double t_fast = !fast ? 0 : timer.stream_ms(fast_call, o.stream);
      clocks.tag(2);
      const double t_exact = timer.stream_ms(exact_call, o.stream);
      clocks.tag(-1);
      if (fast)
        std::printf(" %6.4f %6.4f %5.2fx %6.4f %5.2fx |", t_bf16, t_fast, t_bf16 / t_fast,
                    t_exact, t_bf16 / t_exact);
      else
        std::printf(" %6.4f      -     - %6.4f %5.2fx |", t_bf16, t_exact, t_bf16 / t_exact);
    }
    std::printf("\n");
    if (clocks.available())
      notes.push_back(std::string(c.name) + ": bf16 " + clock_note(clocks, 0) + ", fastq+prod " +
                      clock_note(clocks, 1) + ", q+prod " + clock_note(clocks, 2));
  }
  std::fflush(stdout);
  for (const Layer& L : layers)
    for (void* p : std::initializer_list<void*>{L.x, L.wb, L.y, L.xc, L.wc, L.sx, L.sw, L.xsum,
                                                L.wsum})
      cudaFree(p);
}

// --probe: which FP8 configurations cuBLASLt offers for y^T[M,N] = op_T(A[K,M]) . B[K,N] on this
// device (heuristic status and number of algorithms), to see what the kFp8 route can use.
void probe() {
  cublasLtHandle_t lt;
  cublasLtCreate(&lt);
  const int64_t M = 4096, N = 4096, K = 4096;
  void* dummy = dalloc<float>(size_t(N + M));
  for (int scale_mode : {-1, int(CUBLASLT_MATMUL_MATRIX_SCALE_SCALAR_32F),
                         int(CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F)})
    for (cudaDataType_t out : {CUDA_R_16BF, CUDA_R_32F})
      for (int8_t fast : {int8_t(0), int8_t(1)})
        for (bool ptrs : {false, true}) {
          cublasLtMatmulDesc_t op;
          cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F);
          const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
          cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta));
          cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb));
          cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_FAST_ACCUM, &fast, sizeof(fast));
          cublasStatus_t set = CUBLAS_STATUS_SUCCESS;
          if (scale_mode >= 0) {
            const int32_t m = scale_mode;
            set = cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &m, sizeof(m));
            cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &m, sizeof(m));
          }
          if (ptrs) {
            const void* pa = dummy;
            const void* pb = static_cast<float*>(dummy) + M;
            cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &pa, sizeof(pa));
            cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &pb, sizeof(pb));
          }
          cublasLtMatrixLayout_t a, b, d;
          cublasLtMatrixLayoutCreate(&a, CUDA_R_8F_E4M3, K, M, K);
          cublasLtMatrixLayoutCreate(&b, CUDA_R_8F_E4M3, K, N, K);
          cublasLtMatrixLayoutCreate(&d, out, M, N, M);
          cublasLtMatmulPreference_t pref;
          cublasLtMatmulPreferenceCreate(&pref);
          const uint64_t ws = 32u << 20;
          cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                               sizeof(ws));
          cublasLtMatmulHeuristicResult_t r[8];
          int n = 0;
          const cublasStatus_t st =
              cublasLtMatmulAlgoGetHeuristic(lt, op, a, b, d, d, pref, 8, r, &n);
          std::printf("probe fp8: scale %-9s out %-4s fast_accum %d scale ptrs %-3s: set %d, "
                      "heuristic %d (%s), %d algorithms\n",
                      scale_mode < 0 ? "none" : scale_mode == 0 ? "scalar" : "outer_vec",
                      out == CUDA_R_16BF ? "bf16" : "f32", int(fast), ptrs ? "yes" : "no",
                      int(set), int(st), cublasLtGetStatusString(st), n);
          cublasLtMatmulPreferenceDestroy(pref);
          cublasLtMatrixLayoutDestroy(a), cublasLtMatrixLayoutDestroy(b);
          cublasLtMatrixLayoutDestroy(d), cublasLtMatmulDescDestroy(op);
        }
  int v = 0;
  v = int(cublasLtGetVersion());
  std::printf("cuBLASLt version %d\n", v);
  cudaFree(dummy);
  cublasLtDestroy(lt);
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    if (quest::bench::parse_timing_option(argc, argv, i, o.iters, o.warmup, o.only)) continue;
    const std::string a = argv[i];
    auto next = [&] { return quest::bench::next_arg(argc, argv, i); };
    if (a == "--bits") o.bits = std::stoi(next());
    else if (a == "--autotune") o.autotune = true;
    else if (a == "--no-flush") o.flush = false;
    else if (a == "--sustained") o.sustained = std::stoi(next());
    else if (a == "--stream") o.stream = std::stoi(next());
    else if (a == "--paired") o.paired = std::stoi(next());
    else if (a == "--probe") {
      probe();
      return 0;
    } else if (a == "--scratch-mib") o.scratch_mib = size_t(std::stoul(next()));
    else {
      std::fprintf(stderr,
                   "usage: bench_lowbit_linear [--bits 4] [--iters 30] [--warmup 5] [--autotune] "
                   "[--no-flush] [--sustained REPS] [--stream REPS | --paired ROUNDS] "
                   "[--only 7b|presets] [--scratch-mib 256]\n");
      return 2;
    }
  }
  if (o.bits < 1 || o.bits > quest::cuda::kLowbitMaxBitsInt8 || o.iters < 1 || o.sustained < 0 ||
      o.stream < 0 || o.paired < 0) {
    std::fprintf(stderr, "bench_lowbit_linear: --bits must be 1..7 (8-bit codes have no integer "
                         "route: the layer stays bf16), --iters >= 1, --sustained >= 0, "
                         "--stream >= 0, --paired >= 0\n");
    return 2;
  }
  try {
    cudaDeviceProp prop{};
    CK(cudaGetDeviceProperties(&prop, 0));
    char regime[128];
    if (o.paired > 0) {
      std::snprintf(regime, sizeof regime,
                    "%d rounds of %d calls a path over %d layers' own buffers, paths interleaved "
                    "(paired)", o.paired, kStreamLayers, kStreamLayers);
    } else if (o.stream > 0)
      std::snprintf(regime, sizeof regime,
                    "mean of %d back-to-back calls over %d layers' own buffers (stream)", o.stream,
                    kStreamLayers);
    else if (o.sustained > 0)
      std::snprintf(regime, sizeof regime, "mean of %d back-to-back calls (sustained)",
                    o.sustained);
    else
      std::snprintf(regime, sizeof regime, "median of %d calls, L2 %s", o.iters,
                    o.flush ? "flushed" : "warm");
    std::printf("device: %s (%d SMs, L2 %d MiB); W%dA%d hadamard-trust; %s\n", prop.name,
                prop.multiProcessorCount, prop.l2CacheSize >> 20, o.bits, o.bits, regime);
    std::printf("int8 route: %s; fp8 route: %s%s\n",
                quest::cuda::lowbit_route_name(LowbitRoute::kInt8),
                quest::cuda::lowbit_route_name(LowbitRoute::kFp8),
                o.autotune ? "; cuBLASLt algorithms autotuned" : "");
    std::printf("sm90 kernel: %s\n\n", quest::cuda::s8_gemm_sm90_available()
                                          ? "s8_gemm_sm90 (wgmma + TMA, scales in the epilogue)"
                                          : "not available on this device");
    if (o.paired > 0) {
      std::printf("| case           | bf16 ms | fastq+prod ms  vs bf16  %d-round windows min / median / max | q+prod ms  vs bf16  windows min / median / max |\n", kPairedWindow);
      std::printf("|----------------|---------|---------------------------------------|---------------------------------------|\n");
    } else if (o.stream > 0) {
      std::printf("| case           |");
      for (int r = 1; r <= kStreamRounds; ++r)
        std::printf(" round %d: bf16 ms  fastq+prod  vs bf16  q+prod  vs bf16 |", r);
      std::printf("\n|----------------|");
      for (int r = 1; r <= kStreamRounds; ++r)
        std::printf("---------------------------------------------------|");
      std::printf("\n");
    } else {
      std::printf("| case           | M tok |     K |     N |  bf16 ms  TOP/s | int8 ms  TOP/s vs bf16 | quant staged   IMMA   scale | sm90 256  256p     128   128pp   64pp   TOP/s | q+sm90 ms TOP/s vs bf16 | floor  fastq fq+prod TOP/s vs bf16 |  fp8 ms  TOP/s vs bf16 | fp8 GEMM TOP/s |\n");
      std::printf("|----------------|-------|-------|-------|----------------|------------------------|-----------------------------|------------------------------------------------|-------------------------|------------------------------------|------------------------|----------------|\n");
    }
    const size_t flush_bytes = size_t(256) << 20;
    void* flush_buf = dalloc<uint8_t>(flush_bytes);
    Timer timer(o.warmup, o.iters, o.flush ? flush_buf : nullptr, flush_bytes);
    timer.set_sustained(o.sustained);
    quest::cuda::Blas blas;
    LowbitGemm gemm(o.scratch_mib << 20);
    gemm.set_autotune(o.autotune);
    const std::vector<Case> b7 = {{"7B qkv/o", 4096, 4096, 4096},
                                  {"7B up/gate", 4096, 4096, 11008},
                                  {"7B down", 4096, 11008, 4096}};
    const std::vector<Case> presets = {
        {"30M qkv", 32768, 640, 1920},    {"30M o", 32768, 640, 640},
        {"30M w1/w2", 32768, 640, 1792},  {"30M down", 32768, 1792, 640},
        {"200M qkv", 32768, 1280, 3840},  {"200M o", 32768, 1280, 1280},
        {"200M w1/w2", 32768, 1280, 3584}, {"200M down", 32768, 3584, 1280}};
    quest::bench::ClockSampler clocks(0);
    std::vector<std::string> notes;
    auto run = [&](const Case& c) {
      if (o.stream > 0 || o.paired > 0) run_stream_case(c, o, timer, blas, gemm, clocks, notes);
      else run_case(c, o, timer, blas, gemm);
    };
    if (o.only != "presets")
      for (const Case& c : b7) run(c);
    if (o.only != "7b")
      for (const Case& c : presets) run(c);
    if (!notes.empty()) std::printf("\nmean SM clock and board power while timing (NVML, ~1 ms samples):\n");
    for (const std::string& n : notes) std::printf("  %s\n", n.c_str());
    cudaFree(flush_buf);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_lowbit_linear: %s\n", e.what());
    return 1;
  }
  return 0;
}
