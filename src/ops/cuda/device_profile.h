#pragma once
// Device time in the op profile (ops/op_profile.h): a scope records a CUDA event pair around the
// work it encloses on its stream; flush_device_profile() waits for the events and hands each
// pair's elapsed time to op_profile_record(). Asynchronous: no synchronization inside a step, so
// the profiled step runs as an unprofiled one would (events cost about a microsecond each).
//
// Disabled (the default), a scope is one relaxed atomic load. Host code only (the scopes sit in
// the backends and the linear op, not in kernels); one host thread records at a time.
#include <cuda_runtime.h>

#include <cstdint>

#include "ops/op_profile.h"

namespace quest::cuda {

class DeviceProfileScope {
 public:
  DeviceProfileScope(const char* op, cudaStream_t stream, int64_t a = 0, int64_t b = 0);
  ~DeviceProfileScope();
  DeviceProfileScope(const DeviceProfileScope&) = delete;
  DeviceProfileScope& operator=(const DeviceProfileScope&) = delete;

 private:
  int slot_ = -1;  // the pending record, -1 when profiling was off at entry
  cudaStream_t stream_;
};

// Waits for every recorded scope, adds their times to the op profile and forgets them.
void flush_device_profile();

}  // namespace quest::cuda

#define QUEST_DEVICE_PROFILE_CAT2(a, b) a##b
#define QUEST_DEVICE_PROFILE_CAT(a, b) QUEST_DEVICE_PROFILE_CAT2(a, b)
// QUEST_DEVICE_PROFILE("name", stream) or ("name", stream, a, b): device time of the scope's work.
#define QUEST_DEVICE_PROFILE(...) \
  ::quest::cuda::DeviceProfileScope QUEST_DEVICE_PROFILE_CAT(quest_device_profile_, __LINE__)(__VA_ARGS__)
