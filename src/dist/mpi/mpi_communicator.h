#pragma once
// The communicator over MPI (OpenMPI from Debian's packages in CI), for the CPU data-parallel path
// and for exchanging the NCCL id on GPUs. Collectives are MPI's non-blocking ones, polled against
// a deadline: a peer that died or hangs becomes an error after `timeout_s` instead of a hang.
#include <mpi.h>

#include "dist/communicator.h"

namespace quest {

class MpiCommunicator final : public Communicator {
 public:
  // Initializes MPI (once per process) and takes a private copy of MPI_COMM_WORLD.
  explicit MpiCommunicator(double timeout_s);
  ~MpiCommunicator() override;  // finalizes MPI unless a collective failed

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int local_rank() const override { return local_rank_; }
  std::string backend() const override { return "mpi"; }
  double timeout_s() const override { return timeout_s_; }
  void all_reduce_sum(float* data, int64_t count) override;
  void all_reduce_sum(double* data, int64_t count) override;
  void reduce_scatter_sum(const float* in, float* out, int64_t count) override;
  void all_gather(const float* in, float* out, int64_t count) override;
  void broadcast(void* data, int64_t bytes, int root) override;
  void barrier() override;
  [[noreturn]] void abort(int code) override;

 private:
  // Waits for `request` until the deadline; throws naming `what` on an MPI error or the timeout.
  void wait(MPI_Request& request, const char* what);
  void check(int mpi_status, const char* what);

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1, local_rank_ = 0;
  double timeout_s_;
  bool broken_ = false;  // a collective failed: MPI state is unknown, do not finalize
};

}  // namespace quest
