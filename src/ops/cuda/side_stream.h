#pragma once
// The weight stream: a second stream beside the main one for the work that only the optimizer
// step waits for, so that it runs in the SMs the main stream's kernels leave free instead of
// between them. Host code.
//
// What runs there (the engine's; QUEST_WEIGHT_STREAM=0 keeps everything on the main stream):
// - each weight's quantization after the optimizer step (CudaLinear::prepare_weight); the main
//   stream waits for a layer's at that layer's first use;
// - the weight gradients: each linear layer's dW product and mask pass (CudaLinearOp), the
//   lm_head's dW product. They read an output gradient dY that the main stream overwrites later
//   in the backward pass (the graph reuses its scratch from layer to layer), so the side records
//   each read (reading) and the backend makes the main stream wait for it before any write of
//   that buffer (guard). The engine joins the side back before the gradients are read.
// The results do not change: every hand-over is an event, and the side's products run the
// algorithms the main stream's would (Blas keeps only algorithms bitwise equal to its first).
#include <cuda_runtime.h>

#include <memory>
#include <utility>
#include <vector>

#include "ops/cuda_ops.h"

namespace quest::cuda {

// A CUDA event (timing off) owned like a unique_ptr.
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

 private:
  cudaEvent_t e_ = nullptr;
};

class SideStream {
 public:
  // priority: the stream's (cudaDeviceGetStreamPriorityRange; 0 is the default, the lowest).
  explicit SideStream(int priority = 0) : blas_(std::make_unique<Blas>()) {
    QUEST_CUDA_CHECK(cudaStreamCreateWithPriority(&s_, cudaStreamDefault, priority));
  }
  ~SideStream() {
    cudaStreamSynchronize(s_);
    blas_.reset();
    cudaStreamDestroy(s_);
  }
  SideStream(const SideStream&) = delete;
  SideStream& operator=(const SideStream&) = delete;

  cudaStream_t get() const { return s_; }
  // Products issued here (one Blas per stream: its workspace).
  Blas& blas() { return *blas_; }

  // Work issued here from now on follows the work issued to `main` so far.
  void follow(cudaStream_t main) {
    fork_.record(main);
    fork_.wait_in(s_);
  }
  // The work issued here so far reads `buf`: guard(buf) waits for it.
  void reading(const void* buf) {
    for (auto& r : reads_)
      if (r.buf == buf) {
        r.done.record(s_);
        r.pending = true;
        return;
      }
    reads_.push_back({buf, StreamEvent{}, true});
    reads_.back().done.record(s_);
  }
  // Before `main` writes `buf`: it waits for the side's reads of it.
  void guard(const void* buf, cudaStream_t main) {
    for (auto& r : reads_)
      if (r.buf == buf && r.pending) {
        r.done.wait_in(main);
        r.pending = false;
      }
  }
  // `main` waits for everything issued here so far.
  void join(cudaStream_t main) {
    joined_.record(s_);
    joined_.wait_in(main);
    for (auto& r : reads_) r.pending = false;
  }

 private:
  struct Read {
    const void* buf;
    StreamEvent done;
    bool pending;
  };
  cudaStream_t s_ = nullptr;
  std::unique_ptr<Blas> blas_;
  StreamEvent fork_, joined_;
  std::vector<Read> reads_;
};

}  // namespace quest::cuda
