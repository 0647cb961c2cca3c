// The sm_90a availability check (hopper::sm90a_kernel_available, src/ops/cuda/hopper.cuh): on a
// compute capability 9.0 device, a build whose CUDA code includes sm_90a (this file's own probe
// says so) must report all three Hopper paths available, else their tests and the training
// dispatch would silently fall back (or, with a wrong "yes", run empty kernel bodies). Elsewhere
// all three must say no.
#include <gtest/gtest.h>

#include <atomic>

#include "cuda/cuda_test_util.h"
#include "ops/cuda/attention_backward_sm90.h"
#include "ops/cuda/attention_forward_sm90.h"
#include "ops/cuda/hopper.cuh"
#include "quant/cuda/s8_gemm_sm90.h"

namespace quest {
namespace {

TEST(CudaHopper, KernelsAvailableExactlyWhereSm90aCodeRuns) {
  QUEST_REQUIRE_CUDA();
  int dev = 0, major = 0, minor = 0;
  ASSERT_EQ(cudaGetDevice(&dev), cudaSuccess);
  ASSERT_EQ(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev), cudaSuccess);
  ASSERT_EQ(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev), cudaSuccess);
  cuda_test::DeviceBuffer<int> flag(1);
  cuda::hopper::sm90a_probe_kernel<><<<1, 1>>>(flag.get());
  cuda_test::sync();
  const bool sm90a_code = cuda_test::download(flag)[0] == 1;
  const bool expect = major == 9 && minor == 0 && sm90a_code;
  EXPECT_EQ(cuda::attn::attention_forward_sm90_available(), expect);
  EXPECT_EQ(cuda::attention_backward_sm90_available(), expect);
  EXPECT_EQ(cuda::s8_gemm_sm90_available(), expect);
  if (major == 9) EXPECT_TRUE(sm90a_code) << "the default build carries sm_90a code for Hopper";
}

}  // namespace
}  // namespace quest
