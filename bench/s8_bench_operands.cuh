#pragma once
// What the int8 product's microbenchmarks (bench_s8_roof, bench_s8_code_patterns) share: the 7B
// single-layer shapes and their W4A4 operands, quantized by the training quantizer as the
// product sees them in training.
#include <cstdint>
#include <cstdio>
#include <string>

#include "cuda_bench_util.cuh"
#include "quant/cuda/lowbit_gemm.h"
#include "quant/cuda/s8_gemm_sm90.h"
#include "quant/quant_spec.h"

namespace quest::bench {

// The options both take: --iters N, --warmup N (the flushed median) and --reps N (the
// back-to-back mean). False after a message naming `bench` on anything else or a bad value.
inline bool parse_s8_bench_options(int argc, char** argv, const char* bench, int& iters,
                                   int& warmup, int& reps) {
  std::string only;  // parse_timing_option's --only, which these benches do not use
  for (int i = 1; i < argc; ++i) {
    if (parse_timing_option(argc, argv, i, iters, warmup, only) && only.empty()) continue;
    if (std::string(argv[i]) == "--reps") {
      reps = std::stoi(next_arg(argc, argv, i));
      continue;
    }
    std::fprintf(stderr, "usage: %s [--iters 30] [--warmup 5] [--reps 2000]\n", bench);
    return false;
  }
  if (reps >= 1) return timing_options_ok(bench, iters, warmup);
  std::fprintf(stderr, "%s: --reps >= 1\n", bench);
  return false;
}

// tokens x K -> N of the three 7B linear layers of bench_lowbit_linear's "7b" group: q/k/v/o,
// up/gate, down.
struct S8Shape {
  int64_t T, K, N;
};
inline constexpr S8Shape kLlama7bShapes[] = {{4096, 4096, 4096}, {4096, 4096, 11008},
                                             {4096, 11008, 4096}};

// W4A4 codes and steps of normal-like activations (T x K) and weights (N x K), and a T x N bf16
// output; device memory, freed on destruction.
class W4A4Operands {
 public:
  explicit W4A4Operands(const S8Shape& s) : shape(s) {
    cuda::bf16* x = dalloc<cuda::bf16>(size_t(s.T * s.K));
    float* w = dalloc<float>(size_t(s.N * s.K));
    fill_normal<cuda::bf16><<<1024, 256>>>(x, s.T * s.K, 1, 1.0f);
    fill_normal<float><<<1024, 256>>>(w, s.N * s.K, 2, 0.02f);
    const auto q = cuda::LowbitQuant::from_spec(QuantSpec::parse("hadamard-trust:4"));
    cuda::lowbit_quantize(x, xc, sx, nullptr, s.T, s.K, q, cuda::LowbitRoute::kInt8, nullptr);
    cuda::lowbit_quantize(w, wc, sw, nullptr, s.N, s.K, q, cuda::LowbitRoute::kInt8, nullptr);
    QUEST_CUDA_CHECK(cudaDeviceSynchronize());
    cudaFree(x);
    cudaFree(w);
  }
  ~W4A4Operands() {
    for (void* p : {(void*)y, (void*)xc, (void*)wc, (void*)sx, (void*)sw}) cudaFree(p);
  }
  W4A4Operands(const W4A4Operands&) = delete;
  W4A4Operands& operator=(const W4A4Operands&) = delete;

  // y = the product of xc and wc with their steps (s8_gemm_sm90, its own tile choice).
  void product() const {
    cuda::s8_gemm_sm90(y, xc, sx, wc, sw, shape.T, shape.K, shape.N, nullptr);
  }

  const S8Shape shape;
  cuda::bf16* const y = dalloc<cuda::bf16>(size_t(shape.T * shape.N));
  int8_t* const xc = dalloc<int8_t>(size_t(shape.T * shape.K));
  int8_t* const wc = dalloc<int8_t>(size_t(shape.N * shape.K));
  float* const sx = dalloc<float>(size_t(shape.T));
  float* const sw = dalloc<float>(size_t(shape.N));
};

}  // namespace quest::bench
