#pragma once
// What data-parallel training needs from the ranks of a job: collectives on float buffers, a
// byte broadcast (configs, checkpoints, NCCL ids) and a barrier. Implementations: one process
// (single_communicator.h), MPI on the CPU (mpi/mpi_communicator.h), NCCL on GPUs (nccl/).
//
// Every call is collective: all ranks make the same calls in the same order with the same counts.
// A call that does not complete within the communicator's timeout (a peer died, hangs or is far
// behind) throws quest::Error instead of blocking forever; the communicator is then unusable and
// the process should end the job with abort().
#include <cstdint>
#include <string>

namespace quest {

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual int local_rank() const = 0;      // rank among the processes of this node
  virtual std::string backend() const = 0;  // "single", "mpi", "nccl"
  // Seconds a collective may wait for its peers before it throws (0: no limit).
  virtual double timeout_s() const { return 0.0; }

  // data[i] = sum over ranks of data[i], on every rank.
  virtual void all_reduce_sum(float* data, int64_t count) = 0;
  virtual void all_reduce_sum(double* data, int64_t count) = 0;
  // `in` holds size() blocks of `count` values; rank r receives in `out` the sum over ranks of
  // block r.
  virtual void reduce_scatter_sum(const float* in, float* out, int64_t count) = 0;
  // Each rank gives `count` values; `out` receives size() blocks, block r from rank r.
  virtual void all_gather(const float* in, float* out, int64_t count) = 0;
  // Every rank receives root's `bytes` bytes of `data`.
  virtual void broadcast(void* data, int64_t bytes, int root) = 0;
  virtual void barrier() = 0;

  // Ends this process and every other rank of the job with `code` (after a failed collective or
  // an error on one rank, so that no peer waits for it).
  [[noreturn]] virtual void abort(int code) = 0;
};

}  // namespace quest
