// Event pairs for the op profile (device_profile.h). Events are created on first use and reused
// after each flush, so a profiled step allocates only the first time.
#ifdef QUEST_HAVE_CUDA
#include "ops/cuda/device_profile.h"

#include <mutex>
#include <vector>

#include "ops/cuda_ops.h"

namespace quest::cuda {
namespace {

struct Pending {
  const char* op;
  int64_t a, b;
  cudaEvent_t start, stop;
};

struct State {
  std::mutex mutex;
  std::vector<Pending> records;  // records[0, used) are pending
  size_t used = 0;
};

State& state() {
  static State s;
  return s;
}

}  // namespace

DeviceProfileScope::DeviceProfileScope(const char* op, cudaStream_t stream, int64_t a, int64_t b)
    : stream_(stream) {
  if (!op_profile_enabled()) return;
  State& s = state();
  std::lock_guard lock(s.mutex);
  if (s.used == s.records.size()) {
    Pending p{};
    QUEST_CUDA_CHECK(cudaEventCreate(&p.start));
    QUEST_CUDA_CHECK(cudaEventCreate(&p.stop));
    s.records.push_back(p);
  }
  Pending& p = s.records[s.used];
  p.op = op, p.a = a, p.b = b;
  QUEST_CUDA_CHECK(cudaEventRecord(p.start, stream));
  slot_ = int(s.used++);
}

DeviceProfileScope::~DeviceProfileScope() {
  if (slot_ < 0) return;
  State& s = state();
  std::lock_guard lock(s.mutex);
  cudaEventRecord(s.records[size_t(slot_)].stop, stream_);  // no throw from a destructor
}

void flush_device_profile() {
  State& s = state();
  std::lock_guard lock(s.mutex);
  for (size_t i = 0; i < s.used; ++i) {
    Pending& p = s.records[i];
    QUEST_CUDA_CHECK(cudaEventSynchronize(p.stop));
    float ms = 0;
    QUEST_CUDA_CHECK(cudaEventElapsedTime(&ms, p.start, p.stop));
    op_profile_record(p.op, ms * 1e-3, p.a, p.b);
  }
  s.used = 0;
}

}  // namespace quest::cuda
#endif  // QUEST_HAVE_CUDA
