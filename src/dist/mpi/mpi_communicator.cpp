#include "dist/mpi/mpi_communicator.h"

#include <algorithm>
#include <chrono>
#include <climits>
#include <thread>

#include "core/error.h"

namespace quest {

namespace {

// MPI counts are ints: larger buffers go in pieces of at most this many elements.
constexpr int64_t kMaxChunk = int64_t(1) << 30;

}  // namespace

MpiCommunicator::MpiCommunicator(double timeout_s) : timeout_s_(timeout_s) {
  QUEST_CHECK(timeout_s > 0, "the communication timeout must be positive, got {} s", timeout_s);
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    // Only the main thread calls MPI; OpenMP worker threads never do.
    int provided = 0;
    QUEST_CHECK(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided) == MPI_SUCCESS,
                "MPI_Init failed");
  }
  MPI_Comm_dup(MPI_COMM_WORLD, &comm_);
  // Errors come back as codes (turned into quest::Error) rather than aborting inside MPI.
  MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
  MPI_Comm_rank(comm_, &rank_);
  MPI_Comm_size(comm_, &size_);
  MPI_Comm node;
  MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node);
  MPI_Comm_rank(node, &local_rank_);
  MPI_Comm_free(&node);
}

MpiCommunicator::~MpiCommunicator() {
  if (broken_) return;  // the process is ending through abort() or with pending requests
  MPI_Comm_free(&comm_);
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

void MpiCommunicator::check(int status, const char* what) {
  if (status == MPI_SUCCESS) return;
  broken_ = true;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(status, text, &len);
  fail("rank {} of {}: MPI {} failed: {}", rank_, size_, what, std::string(text, size_t(len)));
}

void MpiCommunicator::wait(MPI_Request& request, const char* what) {
  using clock = std::chrono::steady_clock;
  const auto start = clock::now();
  const auto deadline = start + std::chrono::duration<double>(timeout_s_);
  // Poll quickly at first (collectives of a step usually finish within milliseconds), then back
  // off to at most 1 ms between polls so a waiting rank leaves the cores to its peers.
  auto pause = std::chrono::microseconds(0);
  for (;;) {
    int done = 0;
    check(MPI_Test(&request, &done, MPI_STATUS_IGNORE), what);
    if (done) return;
    const auto now = clock::now();
    if (now > deadline) {
      broken_ = true;
      fail("rank {} of {}: {} did not complete within {:g} s: another rank died, hangs or is far "
           "behind (raise the limit with --dist-timeout)",
           rank_, size_, what, timeout_s_);
    }
    if (pause.count() == 0 && now - start > std::chrono::microseconds(200))
      pause = std::chrono::microseconds(20);
    if (pause.count() > 0) {
      std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, std::chrono::microseconds(1000));
    }
  }
}

void MpiCommunicator::all_reduce_sum(float* data, int64_t count) {
  for (int64_t i = 0; i < count; i += kMaxChunk) {
    MPI_Request r;
    check(MPI_Iallreduce(MPI_IN_PLACE, data + i, int(std::min(kMaxChunk, count - i)), MPI_FLOAT,
                         MPI_SUM, comm_, &r), "all-reduce");
    wait(r, "all-reduce");
  }
}

void MpiCommunicator::all_reduce_sum(double* data, int64_t count) {
  for (int64_t i = 0; i < count; i += kMaxChunk) {
    MPI_Request r;
    check(MPI_Iallreduce(MPI_IN_PLACE, data + i, int(std::min(kMaxChunk, count - i)), MPI_DOUBLE,
                         MPI_SUM, comm_, &r), "all-reduce");
    wait(r, "all-reduce");
  }
}

void MpiCommunicator::reduce_scatter_sum(const float* in, float* out, int64_t count) {
  QUEST_CHECK(count <= INT_MAX, "reduce-scatter of {} values per rank: more than MPI's int count",
              count);
  MPI_Request r;
  check(MPI_Ireduce_scatter_block(in, out, int(count), MPI_FLOAT, MPI_SUM, comm_, &r),
        "reduce-scatter");
  wait(r, "reduce-scatter");
}

void MpiCommunicator::all_gather(const float* in, float* out, int64_t count) {
  QUEST_CHECK(count <= INT_MAX, "all-gather of {} values per rank: more than MPI's int count",
              count);
  MPI_Request r;
  check(MPI_Iallgather(in, int(count), MPI_FLOAT, out, int(count), MPI_FLOAT, comm_, &r),
        "all-gather");
  wait(r, "all-gather");
}

void MpiCommunicator::broadcast(void* data, int64_t bytes, int root) {
  QUEST_CHECK(root >= 0 && root < size_, "broadcast from rank {} of {}", root, size_);
  auto* p = static_cast<char*>(data);
  for (int64_t i = 0; i < bytes; i += kMaxChunk) {
    MPI_Request r;
    check(MPI_Ibcast(p + i, int(std::min(kMaxChunk, bytes - i)), MPI_BYTE, root, comm_, &r),
          "broadcast");
    wait(r, "broadcast");
  }
}

void MpiCommunicator::barrier() {
  MPI_Request r;
  check(MPI_Ibarrier(comm_, &r), "barrier");
  wait(r, "barrier");
}

void MpiCommunicator::abort(int code) {
  broken_ = true;
  MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);  // MPI_Abort does not return; this keeps [[noreturn]] honest
}

}  // namespace quest
