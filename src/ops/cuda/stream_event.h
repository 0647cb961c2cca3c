#pragma once
// Ordering between two streams: a CUDA event (timing off) owned like a unique_ptr. Host code.
//
// The engine keeps the weights' own work (the quantization of each weight after the optimizer
// step, the weight gradient's mask pass) on a second stream beside the main one, so that those
// small, short-lived grids run in the SMs the main stream's kernels leave free instead of one
// after another between them. Results do not change: every hand-over is an event.
#include <cuda_runtime.h>

#include <utility>

#include "ops/cuda_ops.h"

namespace quest::cuda {

class StreamEvent {
 public:
  StreamEvent() { QUEST_CUDA_CHECK(cudaEventCreateWithFlags(&e_, cudaEventDisableTiming)); }
  ~StreamEvent() {
    if (e_) cudaEventDestroy(e_);
  }
  StreamEvent(StreamEvent&& o) noexcept : e_(std::exchange(o.e_, nullptr)) {}
  StreamEvent& operator=(StreamEvent&& o) noexcept {
    std::swap(e_, o.e_);
    return *this;
  }
  StreamEvent(const StreamEvent&) = delete;
  StreamEvent& operator=(const StreamEvent&) = delete;

  // Marks the work issued to `s` so far.
  void record(cudaStream_t s) { QUEST_CUDA_CHECK(cudaEventRecord(e_, s)); }
  // Work issued to `s` from now on waits for the work the last record() marked.
  void wait_in(cudaStream_t s) const { QUEST_CUDA_CHECK(cudaStreamWaitEvent(s, e_, 0)); }
  // `later` waits for everything issued to `earlier` so far.
  void order(cudaStream_t earlier, cudaStream_t later) {
    record(earlier);
    wait_in(later);
  }

 private:
  cudaEvent_t e_ = nullptr;
};

}  // namespace quest::cuda
