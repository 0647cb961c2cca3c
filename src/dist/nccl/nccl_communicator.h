#pragma once
// The communicator over NCCL for data parallelism on GPUs: float collectives take *device*
// buffers and run on one CUDA stream; byte broadcasts and barriers take host memory and go
// through the bootstrap communicator (MPI in a job, or one process), which also carries the NCCL
// id from rank 0 to the others. Built with CUDA and NCCL; the CUDA engine's data-parallel step
// (cuda_zero_adamw.h) runs its collectives.
//
// A collective that does not finish within the timeout (or that NCCL reports as failed) aborts
// the NCCL communicator, so the stream is released, and throws quest::Error.
#include <cuda_runtime.h>
#include <nccl.h>

#include <vector>

#include "dist/communicator.h"

namespace quest {

class NcclCommunicator final : public Communicator {
 public:
  // Selects GPU bootstrap.local_rank() for this process. The bootstrap must outlive this.
  NcclCommunicator(Communicator& bootstrap, double timeout_s);
  ~NcclCommunicator() override;

  int rank() const override { return bootstrap_.rank(); }
  int size() const override { return bootstrap_.size(); }
  int local_rank() const override { return bootstrap_.local_rank(); }
  std::string backend() const override { return "nccl"; }
  double timeout_s() const override { return timeout_s_; }
  void all_reduce_sum(float* data, int64_t count) override;
  void all_reduce_sum(double* data, int64_t count) override;
  void reduce_scatter_sum(const float* in, float* out, int64_t count) override;
  void all_gather(const float* in, float* out, int64_t count) override;
  void broadcast(void* data, int64_t bytes, int root) override { bootstrap_.broadcast(data, bytes, root); }
  void barrier() override { bootstrap_.barrier(); }
  [[noreturn]] void abort(int code) override;

  cudaStream_t stream() const { return stream_; }

  // For overlapping communication with computation: once `ready` (an event recorded on the
  // compute stream) has completed, each part's `count` floats at `data` are summed over the ranks
  // into rank `root`'s buffer (in place), on this communicator's stream, as one NCCL group.
  // Returns when NCCL has taken the work (not when it is done); finish() waits for all of it
  // (with the timeout). Every rank enqueues the same parts in the same order.
  struct Reduce {
    float* data;
    int64_t count;
    int root;
  };
  void reduce_async(const std::vector<Reduce>& parts, cudaEvent_t ready);
  void finish(const char* what) { wait(what); }

 private:
  void check(ncclResult_t r, const char* what);
  // Waits for the stream's collective until the deadline, watching NCCL's asynchronous errors.
  void wait(const char* what);
  // Waits until NCCL has enqueued the last call (a non-blocking communicator may still be busy).
  void wait_enqueued(const char* what);
  [[noreturn]] void fail_timeout(const char* what);

  Communicator& bootstrap_;
  double timeout_s_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  bool broken_ = false;
};

}  // namespace quest
