// SwiGLU gate: out = silu(a) * b, silu(a) = a * sigmoid(a); fp32 math, bf16 in and out.
//
// Kernel shape (both): 256-thread blocks, grid-stride. With every pointer 16-byte aligned, thread i
// owns the 8-element groups i, i + stride, ... of [0, n8 * 8) (16-byte accesses), and the scalar
// tail [n8 * 8, n) goes one element per thread; otherwise n8 = 0 and everything is scalar. Each
// element's inputs are read before its outputs are written, by the same thread, so outputs may
// alias inputs (da or db may be dout).
#include "ops/cuda/common.cuh"
#include "ops/cuda/swiglu_math.cuh"

namespace quest::cuda {
namespace {

using namespace detail;
constexpr int kThreads = 256;

template <int VEC>
__device__ __forceinline__ void swiglu_fwd(bf16* out, const bf16* a, const bf16* b) {
  float fa[VEC], fb[VEC];
  load<VEC>(a, fa);
  load<VEC>(b, fb);
  float y[VEC];
  swiglu_values<VEC>(fa, fb, y);
  store<VEC>(out, y);
}

// d silu(a)/da = s + a s (1 - s), s = sigmoid(a).
template <int VEC>
__device__ __forceinline__ void swiglu_bwd(bf16* da, bf16* db, const bf16* dout, const bf16* a,
                                           const bf16* b) {
  float fa[VEC], fb[VEC], g[VEC], ra[VEC], rb[VEC];
  load<VEC>(a, fa);
  load<VEC>(b, fb);
  load<VEC>(dout, g);
  swiglu_grads<VEC>(g, fa, fb, ra, rb);
  store<VEC>(da, ra);
  store<VEC>(db, rb);
}

__global__ void swiglu_forward_kernel(bf16* out, const bf16* a, const bf16* b, int64_t n,
                                      int64_t n8) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  for (int64_t i = tid; i < n8; i += stride) swiglu_fwd<8>(out + 8 * i, a + 8 * i, b + 8 * i);
  for (int64_t i = 8 * n8 + tid; i < n; i += stride) swiglu_fwd<1>(out + i, a + i, b + i);
}

__global__ void swiglu_backward_kernel(bf16* da, bf16* db, const bf16* dout, const bf16* a,
                                       const bf16* b, int64_t n, int64_t n8) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  for (int64_t i = tid; i < n8; i += stride)
    swiglu_bwd<8>(da + 8 * i, db + 8 * i, dout + 8 * i, a + 8 * i, b + 8 * i);
  for (int64_t i = 8 * n8 + tid; i < n; i += stride)
    swiglu_bwd<1>(da + i, db + i, dout + i, a + i, b + i);
}

}  // namespace

void swiglu_forward(bf16* out, const bf16* a, const bf16* b, int64_t n, cudaStream_t stream) {
  QUEST_CUDA_REQUIRE(n >= 0, "cuda::swiglu_forward: negative size ", n);
  if (n == 0) return;
  const int64_t n8 = aligned16(out) && aligned16(a) && aligned16(b) ? n / 8 : 0;
  swiglu_forward_kernel<<<grid_for(std::max(n8, n - 8 * n8), kThreads), kThreads, 0, stream>>>(
      out, a, b, n, n8);
  QUEST_CUDA_LAUNCH_CHECK("swiglu_forward_kernel");
}

void swiglu_backward(bf16* da, bf16* db, const bf16* dout, const bf16* a, const bf16* b, int64_t n,
                     cudaStream_t stream) {
  QUEST_CUDA_REQUIRE(n >= 0, "cuda::swiglu_backward: negative size ", n);
  if (n == 0) return;
  const bool vec = aligned16(da) && aligned16(db) && aligned16(dout) && aligned16(a) && aligned16(b);
  const int64_t n8 = vec ? n / 8 : 0;
  swiglu_backward_kernel<<<grid_for(std::max(n8, n - 8 * n8), kThreads), kThreads, 0, stream>>>(
      da, db, dout, a, b, n, n8);
  QUEST_CUDA_LAUNCH_CHECK("swiglu_backward_kernel");
}

}  // namespace quest::cuda
