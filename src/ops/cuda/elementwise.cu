// Conversions (fp32 <-> bf16) and the adds (bf16 + bf16; the fp32 residual stream + a bf16 branch).
//
// Kernel shape (all three): 256-thread blocks, grid-stride. With every pointer 16-byte aligned,
// thread i owns the 8-element groups i, i + stride, ... of [0, n8 * 8) (one 16-byte bf16 access,
// two float4 accesses per group), and the scalar tail [n8 * 8, n) goes one element per thread;
// otherwise n8 = 0 and everything is scalar. Each element is read and written by the same thread,
// so outputs may alias inputs.
#include "ops/cuda/common.cuh"

namespace quest::cuda {
namespace {

using namespace detail;
constexpr int kThreads = 256;

// out = in converted (fp32 <-> bf16, round to nearest even): 16-byte groups of 8, then the tail.
template <class Out, class In>
__global__ void convert_kernel(Out* out, const In* in, int64_t n, int64_t n8) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  for (int64_t i = tid; i < n8; i += stride) {
    float f[8];
    load<8>(in + 8 * i, f);
    store<8>(out + 8 * i, f);
  }
  float f[1];
  for (int64_t i = 8 * n8 + tid; i < n; i += stride) {
    load<1>(in + i, f);
    store<1>(out + i, f);
  }
}

// out = float(a) + float(b) (one fp32 addition), rounded once to Out.
template <class Out, class A>
__global__ void add_kernel(Out* out, const A* a, const bf16* b, int64_t n, int64_t n8) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  for (int64_t i = tid; i < n8; i += stride) {
    float fa[8], fb[8];
    load<8>(a + 8 * i, fa);
    load<8>(b + 8 * i, fb);
#pragma unroll
    for (int k = 0; k < 8; ++k) fa[k] += fb[k];
    store<8>(out + 8 * i, fa);
  }
  for (int64_t i = 8 * n8 + tid; i < n; i += stride) {
    float fa[1], fb[1];
    load<1>(a + i, fa);
    load<1>(b + i, fb);
    fa[0] += fb[0];
    store<1>(out + i, fa);
  }
}

unsigned grid(int64_t n, int64_t n8) { return grid_for(std::max(n8, n - 8 * n8), kThreads); }

}  // namespace

void to_bf16(bf16* out, const float* in, int64_t n, cudaStream_t stream) {
  QUEST_CUDA_REQUIRE(n >= 0, "cuda::to_bf16: negative size ", n);
  if (n == 0) return;
  const int64_t n8 = aligned16(out) && aligned16(in) ? n / 8 : 0;
  convert_kernel<bf16, float><<<grid(n, n8), kThreads, 0, stream>>>(out, in, n, n8);
  QUEST_CUDA_LAUNCH_CHECK("convert_kernel<bf16, float>");
}

void to_f32(float* out, const bf16* in, int64_t n, cudaStream_t stream) {
  QUEST_CUDA_REQUIRE(n >= 0, "cuda::to_f32: negative size ", n);
  if (n == 0) return;
  const int64_t n8 = aligned16(out) && aligned16(in) ? n / 8 : 0;
  convert_kernel<float, bf16><<<grid(n, n8), kThreads, 0, stream>>>(out, in, n, n8);
  QUEST_CUDA_LAUNCH_CHECK("convert_kernel<float, bf16>");
}

void add(bf16* out, const bf16* a, const bf16* b, int64_t n, cudaStream_t stream) {
  QUEST_CUDA_REQUIRE(n >= 0, "cuda::add: negative size ", n);
  if (n == 0) return;
  const int64_t n8 = aligned16(out) && aligned16(a) && aligned16(b) ? n / 8 : 0;
  add_kernel<bf16, bf16><<<grid(n, n8), kThreads, 0, stream>>>(out, a, b, n, n8);
  QUEST_CUDA_LAUNCH_CHECK("add_kernel<bf16>");
}

void add(float* out, const float* a, const bf16* b, int64_t n, cudaStream_t stream) {
  QUEST_CUDA_REQUIRE(n >= 0, "cuda::add: negative size ", n);
  if (n == 0) return;
  const int64_t n8 = aligned16(out) && aligned16(a) && aligned16(b) ? n / 8 : 0;
  add_kernel<float, float><<<grid(n, n8), kThreads, 0, stream>>>(out, a, b, n, n8);
  QUEST_CUDA_LAUNCH_CHECK("add_kernel<float>");
}

}  // namespace quest::cuda
