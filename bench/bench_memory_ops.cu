// Two memory-bound ops of the training step on the GPU, old kernels against new ones in one
// process, each against a device-to-device copy of the same number of bytes:
//   RoPE (cuda::rope_forward / rope_backward, in place on the q|k part of a bf16 qkv [B*T, 3C]):
//     old: the per-pair kernel (double angle + sincosf per pair; rope_apply_reference),
//     new: the cos/sin table path with 1, 2 (what rope_forward uses), 4 or 8 rows per block;
//   AdamW (cuda::adamw_update on n fp32 parameters with m, v, the gradient and the bf16 copy):
//     the kernel as it is (it already runs at the copy's speed; unrolled variants with 2 and 4
//     float4 groups a thread and streaming cache hints measured the same or 4% slower, so were
//     not kept: docs/PERF.md).
//
//   bench_memory_ops [--iters 30] [--warmup 3] [--no-flush]
//
// Shapes: the 30M and 200M presets at 64 x 512 tokens (5 and 10 heads of 128) and their full
// parameter counts (embedding and lm_head included: 94.9M and 332.0M). Each call is timed alone
// between CUDA events (median of --iters) with L2 flushed before it (a 256 MiB memset outside the
// timed region) unless --no-flush. GB/s counts the bytes a call must move: RoPE reads and writes
// the q|k part (2 x B*T x 2C x 2 bytes); AdamW reads p, g, m, v and writes p, m, v, bf16 p (30
// bytes a parameter); the copy moves the same count (half read, half written). Before timing,
// each RoPE case checks that the new paths give the old one's bits (the whole qkv).
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "cuda_bench_util.cuh"
#include "ops/cuda_ops.h"

namespace quest::cuda {
// Internal entry points of src/ops/cuda/rope.cu (not in cuda_ops.h).
void rope_apply_reference(bf16* qkv, int64_t B, int64_t T, int64_t n_head, int64_t head_dim,
                          float theta, int64_t pos0, float sign, cudaStream_t stream);
void rope_apply_rows(bf16* qkv, int64_t B, int64_t T, int64_t n_head, int64_t head_dim, float theta,
                     int64_t pos0, float sign, int rows, cudaStream_t stream);
}  // namespace quest::cuda

namespace {

using quest::cuda::bf16;
using namespace quest::bench;
namespace gpu = quest::cuda;

// Number of 32-bit words that differ between a and b (n words).
__global__ void count_diff(const uint32_t* a, const uint32_t* b, int64_t n, unsigned long long* out) {
  unsigned long long c = 0;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    c += a[i] != b[i];
  if (c) atomicAdd(out, c);
}

unsigned long long differing(const void* a, const void* b, size_t bytes) {
  static unsigned long long* d = dalloc<unsigned long long>(1);
  QUEST_CUDA_CHECK(cudaMemset(d, 0, sizeof(*d)));
  count_diff<<<1024, 256>>>(static_cast<const uint32_t*>(a), static_cast<const uint32_t*>(b),
                            int64_t(bytes / 4), d);
  unsigned long long h = 0;
  QUEST_CUDA_CHECK(cudaMemcpy(&h, d, sizeof(h), cudaMemcpyDeviceToHost));
  return h;
}

struct Timing {
  double ms, gbs;
};

void print_row(const char* shape, const char* what, Timing t, Timing copy, Timing old) {
  std::printf("| %s | %s | %.3f | %.0f | %.2f | %.2fx |\n", shape, what, t.ms, t.gbs, t.gbs / copy.gbs,
              old.ms / t.ms);
}

bool bench_rope(EventTimer& timer, const char* shape, int64_t n_head) {
  const int64_t B = 64, T = 512, hd = 128, C = n_head * hd, BT = B * T;
  const float theta = 10000.0f;
  const size_t n = size_t(BT * 3 * C);
  bf16* x = dalloc<bf16>(n);
  bf16* a = dalloc<bf16>(n);
  bf16* b = dalloc<bf16>(n);
  fill_normal<<<1024, 256>>>(x, int64_t(n), 7, 1.0f);
  const double moved = 2.0 * double(BT) * double(2 * C) * 2.0;  // q|k read + written
  auto gbs = [&](double ms) { return Timing{ms, moved / (ms * 1e-3) / 1e9}; };

  // Bits first: every new path (forward and backward) against the per-pair kernel.
  bool ok = true;
  for (const float sign : {1.0f, -1.0f})
    for (const int rows : {1, 2, 4, 8}) {
      QUEST_CUDA_CHECK(cudaMemcpy(a, x, n * sizeof(bf16), cudaMemcpyDeviceToDevice));
      QUEST_CUDA_CHECK(cudaMemcpy(b, x, n * sizeof(bf16), cudaMemcpyDeviceToDevice));
      gpu::rope_apply_reference(a, B, T, n_head, hd, theta, 0, sign, nullptr);
      gpu::rope_apply_rows(b, B, T, n_head, hd, theta, 0, sign, rows, nullptr);
      const auto diff = differing(a, b, n * sizeof(bf16));
      if (diff) {
        std::printf("MISMATCH rope %s rows %d sign %+.0f: %llu words differ\n", shape, rows, sign, diff);
        ok = false;
      }
    }

  const Timing copy = gbs(timer.median_ms([&] {
    QUEST_CUDA_CHECK(cudaMemcpyAsync(b, a, size_t(moved / 2), cudaMemcpyDeviceToDevice, nullptr));
  }));
  const Timing old_f = gbs(timer.median_ms([&] { gpu::rope_apply_reference(a, B, T, n_head, hd, theta, 0, 1.0f, nullptr); }));
  const Timing old_b = gbs(timer.median_ms([&] { gpu::rope_apply_reference(a, B, T, n_head, hd, theta, 0, -1.0f, nullptr); }));
  print_row(shape, "copy (same bytes)", copy, copy, copy);
  print_row(shape, "rope fwd old (per pair)", old_f, copy, old_f);
  print_row(shape, "rope bwd old (per pair)", old_b, copy, old_b);
  for (const int rows : {1, 2, 4, 8}) {
    const Timing t = gbs(timer.median_ms([&] { gpu::rope_apply_rows(a, B, T, n_head, hd, theta, 0, 1.0f, rows, nullptr); }));
    const std::string what = "rope fwd table, " + std::to_string(rows) + " rows/block";
    print_row(shape, what.c_str(), t, copy, old_f);
  }
  const Timing new_f = gbs(timer.median_ms([&] { gpu::rope_forward(a, B, T, n_head, hd, theta, 0, nullptr); }));
  const Timing new_b = gbs(timer.median_ms([&] { gpu::rope_backward(a, B, T, n_head, hd, theta, 0, nullptr); }));
  print_row(shape, "rope_forward (new)", new_f, copy, old_f);
  print_row(shape, "rope_backward (new)", new_b, copy, old_b);
  cudaFree(x), cudaFree(a), cudaFree(b);
  return ok;
}

void bench_adamw(EventTimer& timer, const char* shape, int64_t n) {
  float *p = dalloc<float>(n), *m = dalloc<float>(n), *v = dalloc<float>(n), *g = dalloc<float>(n);
  bf16* pb = dalloc<bf16>(n);
  float* clip = dalloc<float>(1);
  const float clip_h = 0.5f;
  QUEST_CUDA_CHECK(cudaMemcpy(clip, &clip_h, sizeof(float), cudaMemcpyHostToDevice));
  fill_normal<<<4096, 256>>>(p, n, 1, 0.05f);
  fill_normal<<<4096, 256>>>(m, n, 2, 0.01f);
  fill_normal<<<4096, 256>>>(g, n, 4, 1.0f);
  QUEST_CUDA_CHECK(cudaMemset(v, 0, n * sizeof(float)));  // v >= 0, as the optimizer's
  const gpu::AdamWStep step{3e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, 0.2f, 0.1f};
  const double moved = 30.0 * double(n);
  auto gbs = [&](double ms) { return Timing{ms, moved / (ms * 1e-3) / 1e9}; };
  // The copy's own buffers (15 bytes a parameter each way), freed before the AdamW timing.
  char* csrc = dalloc<char>(size_t(moved / 2));
  char* cdst = dalloc<char>(size_t(moved / 2));
  const Timing copy = gbs(timer.median_ms([&] {
    QUEST_CUDA_CHECK(cudaMemcpyAsync(cdst, csrc, size_t(moved / 2), cudaMemcpyDeviceToDevice, nullptr));
  }));
  cudaFree(csrc), cudaFree(cdst);
  const Timing t = gbs(timer.median_ms([&] { gpu::adamw_update(p, pb, g, m, v, n, step, clip, nullptr); }));
  print_row(shape, "copy (same bytes)", copy, copy, copy);
  print_row(shape, "adamw_update", t, copy, t);
  for (void* q : {(void*)p, (void*)m, (void*)v, (void*)g, (void*)pb, (void*)clip}) cudaFree(q);
}

}  // namespace

int main(int argc, char** argv) {
  int iters = 30, warmup = 3;
  bool flush = true;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--iters")) iters = std::atoi(next_arg(argc, argv, i).c_str());
    else if (!std::strcmp(argv[i], "--warmup")) warmup = std::atoi(next_arg(argc, argv, i).c_str());
    else if (!std::strcmp(argv[i], "--no-flush")) flush = false;
    else {
      std::fprintf(stderr, "usage: bench_memory_ops [--iters N] [--warmup N] [--no-flush]\n");
      return 2;
    }
  }
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // rows appear as measured
  cudaDeviceProp prop{};
  QUEST_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s (%d SMs), median of %d, L2 %s\n\n", prop.name, prop.multiProcessorCount, iters,
              flush ? "flushed" : "warm");
  const size_t flush_bytes = size_t(256) << 20;
  void* flush_buf = flush ? dalloc<char>(flush_bytes) : nullptr;
  EventTimer timer(warmup, iters, flush_buf, flush ? flush_bytes : 0);
  std::printf("| shape | call | ms | GB/s | vs copy | speed-up vs old |\n|---|---|---|---|---|---|\n");
  bool ok = bench_rope(timer, "30M (5 x 128)", 5);
  ok &= bench_rope(timer, "200M (10 x 128)", 10);
  bench_adamw(timer, "30M (94.9M params)", 94871680);
  bench_adamw(timer, "200M (332.0M params)", 331966720);
  std::printf("\nbitwise checks: %s\n", ok ? "all equal" : "MISMATCH");
  return ok ? 0 : 1;
}
