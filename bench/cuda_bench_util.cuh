#pragma once
// What the GPU microbenchmarks (bench/*.cu) share: device allocation that fails loudly, and the
// median time of one call by CUDA events on the default stream, optionally with the L2 cache
// flushed (a memset of a buffer larger than L2) before each timed call, or the mean of a
// back-to-back stream of calls.
#include <cuda_runtime.h>

#include <cuda_bf16.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "ops/cuda_ops.h"

namespace quest::bench {

template <class T>
T* dalloc(size_t n) {
  void* p = nullptr;
  QUEST_CUDA_CHECK(cudaMalloc(&p, n * sizeof(T)));
  return static_cast<T*>(p);
}

// Roughly normal values (a sum of 4 hashed uniforms, standard deviation `scale`), never all zero;
// T is float or __nv_bfloat16. Any grid (grid-stride).
template <class T>
__global__ void fill_normal(T* p, int64_t n, uint64_t seed, float scale) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    uint64_t z = (uint64_t(i) + seed) * 0x9E3779B97F4A7C15ull;
    z ^= z >> 29, z *= 0xBF58476D1CE4E5B9ull, z ^= z >> 32;
    float s = 0.f;
    for (int k = 0; k < 4; ++k) s += float((z >> (16 * k)) & 0xffff) / 65536.f - 0.5f;
    p[i] = T(s * scale * 1.7f);
  }
}

// The value after option argv[i], advancing i; a missing value ends the program with a message.
inline std::string next_arg(int argc, char** argv, int& i) {
  if (i + 1 >= argc) {
    std::fprintf(stderr, "%s needs a value\n", argv[i]);
    std::exit(2);
  }
  return argv[++i];
}

// The timing options the benches share: --iters N, --warmup N, --only NAME. When argv[i] is one
// of them, reads its value into iters, warmup or only (advancing i past it) and returns true;
// otherwise returns false and leaves everything as it was.
inline bool parse_timing_option(int argc, char** argv, int& i, int& iters, int& warmup,
                                std::string& only) {
  const std::string a = argv[i];
  if (a == "--iters") iters = std::stoi(next_arg(argc, argv, i));
  else if (a == "--warmup") warmup = std::stoi(next_arg(argc, argv, i));
  else if (a == "--only") only = next_arg(argc, argv, i);
  else return false;
  return true;
}

// iters >= 1 and warmup >= 0; otherwise false after a message naming the bench.
inline bool timing_options_ok(const char* bench, int iters, int warmup) {
  if (iters >= 1 && warmup >= 0) return true;
  std::fprintf(stderr, "%s: --iters >= 1, --warmup >= 0\n", bench);
  return false;
}

class EventTimer {
 public:
  // flush: a device buffer of flush_bytes to overwrite before each timed call (null: no flush).
  EventTimer(int warmup, int iters, void* flush = nullptr, size_t flush_bytes = 0)
      : warmup_(warmup), iters_(iters), flush_(flush), flush_bytes_(flush_bytes) {
    QUEST_CUDA_CHECK(cudaEventCreate(&e0_));
    QUEST_CUDA_CHECK(cudaEventCreate(&e1_));
  }
  ~EventTimer() {
    cudaEventDestroy(e0_);
    cudaEventDestroy(e1_);
  }
  EventTimer(const EventTimer&) = delete;
  EventTimer& operator=(const EventTimer&) = delete;

  // Median milliseconds of one call of f, after the warm-up calls.
  double median_ms(const std::function<void()>& f) {
    for (int i = 0; i < warmup_; ++i) f();
    std::vector<float> ms;
    for (int i = 0; i < iters_; ++i) {
      if (flush_) QUEST_CUDA_CHECK(cudaMemsetAsync(flush_, i & 0xff, flush_bytes_, nullptr));
      QUEST_CUDA_CHECK(cudaEventRecord(e0_, nullptr));
      f();
      QUEST_CUDA_CHECK(cudaEventRecord(e1_, nullptr));
      QUEST_CUDA_CHECK(cudaEventSynchronize(e1_));
      float t = 0.f;
      QUEST_CUDA_CHECK(cudaEventElapsedTime(&t, e0_, e1_));
      ms.push_back(t);
    }
    QUEST_CUDA_CHECK(cudaGetLastError());
    std::sort(ms.begin(), ms.end());
    return ms[ms.size() / 2];
  }

  // Mean milliseconds of one call of f over reps back-to-back calls (no flush), after reps / 10
  // untimed ones: the steady state of a stream of calls (for the int8 product, the power cap's).
  double back_to_back_ms(const std::function<void()>& f, int reps) {
    return stream_ms([&](int) { f(); }, reps);
  }

  // Mean milliseconds of call i of f(i) over reps back-to-back calls i = 0..reps-1 (no flush),
  // after reps / 10 untimed ones: a stream whose calls differ (e.g. each on another layer's
  // buffers, so that their operands come from memory as in a model's forward).
  double stream_ms(const std::function<void(int)>& f, int reps) {
    for (int i = 0; i < reps / 10; ++i) f(i);
    QUEST_CUDA_CHECK(cudaEventRecord(e0_, nullptr));
    for (int i = 0; i < reps; ++i) f(i);
    QUEST_CUDA_CHECK(cudaEventRecord(e1_, nullptr));
    QUEST_CUDA_CHECK(cudaEventSynchronize(e1_));
    QUEST_CUDA_CHECK(cudaGetLastError());
    float t = 0.f;
    QUEST_CUDA_CHECK(cudaEventElapsedTime(&t, e0_, e1_));
    return double(t) / reps;
  }

  // Paths timed against each other in the same conditions: blocks rounds, each running every
  // path's block(i) for i = 0..calls_per_block-1 (the call index runs on across rounds), the
  // paths' order rotated each round, events between the blocks and no host sync until the end
  // (after one untimed round). Returns ms[path][round]: each block's time. Blocks of a few ms
  // interleaved this way share the GPU's clock phases, which at the power cap last 100-300 ms,
  // so the paths' ratio does not depend on which phase one path's long timing happened to hit.
  std::vector<std::vector<float>> interleaved_ms(const std::vector<std::function<void(int)>>& paths,
                                                 int calls_per_block, int blocks) {
    const size_t P = paths.size();
    int call = 0;
    for (size_t p = 0; p < P; ++p)
      for (int i = 0; i < calls_per_block; ++i) paths[p](call++);
    std::vector<cudaEvent_t> ev(P * size_t(blocks) + 1);
    for (cudaEvent_t& e : ev) QUEST_CUDA_CHECK(cudaEventCreate(&e));
    std::vector<std::vector<float>> ms(P, std::vector<float>(size_t(blocks)));
    std::vector<size_t> order(P * size_t(blocks));  // which path each event interval timed
    size_t k = 0;
    QUEST_CUDA_CHECK(cudaEventRecord(ev[0], nullptr));
    for (int b = 0; b < blocks; ++b) {
      const int first = call;
      for (size_t j = 0; j < P; ++j) {
        const size_t p = (j + size_t(b)) % P;
        for (int i = 0; i < calls_per_block; ++i) paths[p](first + i);
        order[k] = p;
        QUEST_CUDA_CHECK(cudaEventRecord(ev[++k], nullptr));
      }
      call = first + calls_per_block;
    }
    QUEST_CUDA_CHECK(cudaEventSynchronize(ev.back()));
    QUEST_CUDA_CHECK(cudaGetLastError());
    for (size_t i = 0; i < order.size(); ++i)
      QUEST_CUDA_CHECK(cudaEventElapsedTime(&ms[order[i]][i / P], ev[i], ev[i + 1]));
    for (cudaEvent_t e : ev) cudaEventDestroy(e);
    return ms;
  }

  // The benchmark's regime: sustained_reps 0 (the default) times one call at a time
  // (median_ms, flushed if the timer flushes), > 0 a stream of that many back-to-back calls
  // (back_to_back_ms: no flush, the power cap's steady state).
  void set_sustained(int reps) { sustained_reps_ = reps; }
  double ms(const std::function<void()>& f) {
    return sustained_reps_ > 0 ? back_to_back_ms(f, sustained_reps_) : median_ms(f);
  }

 private:
  int sustained_reps_ = 0;
  int warmup_, iters_;
  void* flush_;
  size_t flush_bytes_;
  cudaEvent_t e0_, e1_;
};

}  // namespace quest::bench
