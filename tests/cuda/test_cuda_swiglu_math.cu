// SwiGLU's shared device math (src/ops/cuda/swiglu_math.cuh): the sigmoid of 8 values at once,
// which takes the reciprocal's fast path only when all 8 denominators allow it, must give the
// bits of the plain IEEE division 1 / (1 + e^-a) for every input, and the one-compare test of
// the fast path must agree with the exponent range where MUFU.RCP + one Newton step is exact
// (biased exponent 1 .. 252). Inputs: every bf16 value (what the kernels read: infinities, NaNs,
// subnormals, the saturated tails included) and random fp32 bit patterns, in groups of 8 that
// mix both paths.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <vector>

#include "core/rng.h"
#include "cuda/cuda_test_util.h"
#include "ops/cuda/swiglu_math.cuh"

namespace quest {
namespace {

using namespace cuda_test;

// s[i] from swiglu_sigmoid<8> over a[8 g .. 8 g + 7]; ref[i] by the division; fast[i] the
// one-compare test on d and exact[i] the exponent-range test, for d = 1 + e^-a.
__global__ void sigmoid_kernel(const float* a, float* s, float* ref, int* fast, int* exact,
                               int groups) {
  const int g = blockIdx.x * blockDim.x + threadIdx.x;
  if (g >= groups) return;
  float v[8], out[8];
  for (int k = 0; k < 8; ++k) v[k] = a[8 * g + k];
  cuda::detail::swiglu_sigmoid<8>(v, out);
  for (int k = 0; k < 8; ++k) {
    const int i = 8 * g + k;
    const float d = 1.0f + expf(-v[k]);
    s[i] = out[k];
    ref[i] = 1.0f / d;
    fast[i] = cuda::detail::sigmoid_rcp_fast_path(d);
    const uint32_t e = (__float_as_uint(d) >> 23) & 0xffu;
    exact[i] = e >= 1u && e <= 252u;
  }
}

TEST(CudaSwigluMath, SigmoidFastPathGivesTheDivisionsBits) {
  QUEST_REQUIRE_CUDA();
  std::vector<float> a;
  for (uint32_t b = 0; b < 65536; ++b) a.push_back(std::bit_cast<float>(b << 16));
  Rng rng(77);
  for (int i = 0; i < (1 << 20); ++i) a.push_back(std::bit_cast<float>(uint32_t(rng.next_u64())));
  const int n = int(a.size()), groups = n / 8;
  auto da = upload(a);
  DeviceBuffer<float> s(n), ref(n);
  DeviceBuffer<int> fast(n), exact(n);
  sigmoid_kernel<<<(groups + 255) / 256, 256>>>(da, s, ref, fast, exact, groups);
  QUEST_CUDA_CHECK(cudaGetLastError());
  const auto hs = download(s), href = download(ref);
  const auto hfast = download(fast), hexact = download(exact);
  int slow_path = 0, mismatches = 0;
  for (int i = 0; i < n; ++i) {
    const bool same = std::isnan(href[i]) ? std::isnan(hs[i])
                                          : std::bit_cast<uint32_t>(hs[i]) ==
                                                std::bit_cast<uint32_t>(href[i]);
    if (!same && mismatches++ < 5)
      ADD_FAILURE() << "a = " << a[i] << ": sigmoid " << hs[i] << ", division " << href[i];
    if (hfast[i] != hexact[i] && mismatches++ < 5)
      ADD_FAILURE() << "a = " << a[i] << ": fast-path test " << hfast[i] << ", exponent range "
                    << hexact[i];
    slow_path += !hfast[i];
  }
  EXPECT_EQ(mismatches, 0);
  // The inputs must exercise the slow path too (e^-a overflowing, NaN), else this proves little.
  EXPECT_GT(slow_path, 1000);
  EXPECT_LT(slow_path, n / 2);
}

}  // namespace
}  // namespace quest
