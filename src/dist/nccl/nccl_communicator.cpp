#include "dist/nccl/nccl_communicator.h"

#include <chrono>
#include <cstdlib>
#include <thread>

#include "core/error.h"

namespace quest {

NcclCommunicator::NcclCommunicator(Communicator& bootstrap, double timeout_s)
    : bootstrap_(bootstrap), timeout_s_(timeout_s) {
  int devices = 0;
  QUEST_CHECK(cudaGetDeviceCount(&devices) == cudaSuccess && devices > 0, "NCCL: no CUDA device");
  QUEST_CHECK(bootstrap.local_rank() < devices,
              "NCCL: local rank {} has no GPU of its own ({} on this node): start at most one rank per GPU",
              bootstrap.local_rank(), devices);
  QUEST_CHECK(cudaSetDevice(bootstrap.local_rank()) == cudaSuccess, "NCCL: cannot select GPU {}",
              bootstrap.local_rank());
  QUEST_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking) == cudaSuccess,
              "NCCL: cannot create a stream");
  ncclUniqueId id;
  if (bootstrap.rank() == 0) check(ncclGetUniqueId(&id), "ncclGetUniqueId");
  bootstrap.broadcast(&id, sizeof id, 0);
  // Non-blocking initialization, so that a rank that never joins is a timeout, not a hang.
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  check(ncclCommInitRankConfig(&comm_, bootstrap.size(), id, bootstrap.rank(), &config),
        "ncclCommInitRank");
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  for (ncclResult_t state = ncclInProgress; state == ncclInProgress;) {
    check(ncclCommGetAsyncError(comm_, &state), "ncclCommInitRank");
    if (state == ncclInProgress && std::chrono::steady_clock::now() > deadline) {
      broken_ = true;
      ncclCommAbort(comm_);
      fail("rank {}: NCCL initialization did not complete within {:g} s", rank(), timeout_s);
    }
    if (state == ncclInProgress) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

NcclCommunicator::~NcclCommunicator() {
  if (comm_) broken_ ? ncclCommAbort(comm_) : ncclCommDestroy(comm_);
  if (stream_) cudaStreamDestroy(stream_);
}

void NcclCommunicator::check(ncclResult_t r, const char* what) {
  if (r == ncclSuccess || r == ncclInProgress) return;
  broken_ = true;
  fail("rank {} of {}: NCCL {} failed: {}", rank(), size(), what, ncclGetErrorString(r));
}

void NcclCommunicator::wait(const char* what) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s_);
  for (;;) {
    // A non-blocking communicator may still be enqueueing (ncclInProgress); then the stream.
    ncclResult_t async = ncclSuccess;
    check(ncclCommGetAsyncError(comm_, &async), what);
    if (async != ncclInProgress) {
      check(async, what);
      const cudaError_t s = cudaStreamQuery(stream_);
      if (s == cudaSuccess) return;
      QUEST_CHECK(s == cudaErrorNotReady, "rank {}: CUDA error during {}: {}", rank(), what,
                  cudaGetErrorString(s));
    }
    if (std::chrono::steady_clock::now() > deadline) fail_timeout(what);
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

void NcclCommunicator::fail_timeout(const char* what) {
  broken_ = true;
  ncclCommAbort(comm_);  // releases the stream
  comm_ = nullptr;
  fail("rank {} of {}: {} did not complete within {:g} s: another rank died, hangs or is far "
       "behind (raise the limit with --dist-timeout)",
       rank(), size(), what, timeout_s_);
}

void NcclCommunicator::wait_enqueued(const char* what) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s_);
  for (;;) {
    ncclResult_t async = ncclSuccess;
    check(ncclCommGetAsyncError(comm_, &async), what);
    if (async != ncclInProgress) return check(async, what);
    if (std::chrono::steady_clock::now() > deadline) fail_timeout(what);
    std::this_thread::sleep_for(std::chrono::microseconds(20));
  }
}

void NcclCommunicator::reduce_async(const std::vector<Reduce>& parts, cudaEvent_t ready) {
  QUEST_CHECK(cudaStreamWaitEvent(stream_, ready, 0) == cudaSuccess, "rank {}: cudaStreamWaitEvent failed", rank());
  check(ncclGroupStart(), "reduce (group start)");
  for (const Reduce& p : parts)
    check(ncclReduce(p.data, p.data, size_t(p.count), ncclFloat32, ncclSum, p.root, comm_, stream_), "reduce");
  check(ncclGroupEnd(), "reduce (group end)");
  wait_enqueued("reduce");
}

void NcclCommunicator::all_reduce_sum(float* data, int64_t count) {
  check(ncclAllReduce(data, data, size_t(count), ncclFloat32, ncclSum, comm_, stream_), "all-reduce");
  wait("all-reduce");
}

void NcclCommunicator::all_reduce_sum(double* data, int64_t count) {
  check(ncclAllReduce(data, data, size_t(count), ncclFloat64, ncclSum, comm_, stream_), "all-reduce");
  wait("all-reduce");
}

void NcclCommunicator::reduce_scatter_sum(const float* in, float* out, int64_t count) {
  check(ncclReduceScatter(in, out, size_t(count), ncclFloat32, ncclSum, comm_, stream_),
        "reduce-scatter");
  wait("reduce-scatter");
}

void NcclCommunicator::all_gather(const float* in, float* out, int64_t count) {
  check(ncclAllGather(in, out, size_t(count), ncclFloat32, comm_, stream_), "all-gather");
  wait("all-gather");
}

void NcclCommunicator::abort(int code) {
  if (comm_) ncclCommAbort(comm_);
  comm_ = nullptr;
  bootstrap_.abort(code);
  std::abort();  // not reached: the bootstrap's abort ends the process
}

}  // namespace quest
