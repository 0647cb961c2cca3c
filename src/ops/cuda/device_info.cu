// Per-device caches of device attributes (device_info.h).
#include "ops/cuda/device_info.h"

#include <atomic>

#include "ops/cuda_ops.h"

namespace quest::cuda {

int device_sm_count(int device) {
  constexpr int kCached = 64;  // devices past this are queried every time (none exist today)
  static std::atomic<int> cache[kCached] = {};
  const bool cached = device >= 0 && device < kCached;
  int n = cached ? cache[device].load(std::memory_order_relaxed) : 0;
  if (n == 0) {
    QUEST_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device));
    if (cached) cache[device].store(n, std::memory_order_relaxed);
  }
  return n;
}

}  // namespace quest::cuda
