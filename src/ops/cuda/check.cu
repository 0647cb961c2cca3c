// quest::cuda::check: CUDA status -> quest::Error naming the call, the place and CUDA's message.
#include "ops/cuda/common.cuh"

namespace quest::cuda {

void check(cudaError_t status, const char* what, const char* file, int line) {
  if (status == cudaSuccess) return;
  detail::raise("CUDA error ", cudaGetErrorName(status), " (", cudaGetErrorString(status),
                ") from ", what, " at ", file, ":", line);
}

}  // namespace quest::cuda
