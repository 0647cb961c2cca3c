#pragma once
// What the GPU microbenchmarks (bench/*.cu) share: device allocation that fails loudly, and the
// median time of one call by CUDA events on the default stream, optionally with the L2 cache
// flushed (a memset of a buffer larger than L2) before each timed call.
#include <cuda_runtime.h>

#include <algorithm>
#include <functional>
#include <vector>

#include "ops/cuda_ops.h"

namespace quest::bench {

template <class T>
T* dalloc(size_t n) {
  void* p = nullptr;
  QUEST_CUDA_CHECK(cudaMalloc(&p, n * sizeof(T)));
  return static_cast<T*>(p);
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

 private:
  int warmup_, iters_;
  void* flush_;
  size_t flush_bytes_;
  cudaEvent_t e0_, e1_;
};

}  // namespace quest::bench
