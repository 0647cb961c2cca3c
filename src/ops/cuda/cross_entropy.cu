// Softmax cross-entropy over the first V of Vp columns (the rest is vocabulary padding), as
// cpu::cross_entropy: per-row losses and, optionally, grad_scale * (softmax - onehot) in place.
//
// Targets live on the device, so they cannot be validated on the host: a row whose target is
// outside [0, V) gets a NaN loss and (when dlogits is given) a NaN gradient row, loud downstream.
#include <cmath>

#include "ops/cuda/common.cuh"

namespace quest::cuda {
namespace {

using namespace detail;
constexpr int kThreads = 512;

// One block of kThreads per row (grid N). Thread t owns the column groups t, t + kThreads, ...
// (VEC columns each: 8 with Vp % 8 == 0 and 16-byte aligned pointers, one 16-byte access; else 1).
// Over the real columns [0, V) (the group straddling V is masked): each thread's max, the block
// max, each thread's sum of e^(l - max), the block sum (fixed order: deterministic); l[y] is read
// by thread 0 before the first barrier. loss = max + log(sum) - l[y], in double. Then (dlogits !=
// null) each thread rewrites its own groups with grad_scale * e^(l - max) / sum (- grad_scale at
// y; 0 in [V, Vp)); every element is read and then written by the same thread and l[y] was
// consumed before, so dlogits may alias logits.
//
// STAGED (VEC = 8, the row fits in shared memory): each thread first copies its own groups of the
// row into dynamic shared memory (cp.async) and the three sweeps read them there, so the logits
// leave DRAM once instead of twice (a 50k-column row is 100 KB: more rows in flight than L2
// holds, so the second pass of the unstaged kernel missed it). A thread only reads what it copied itself,
// so waiting for its own copies suffices. Same arithmetic, same bits as unstaged.
template <int VEC, bool STAGED>
__global__ void __launch_bounds__(kThreads)
    cross_entropy_kernel(bf16* dlogits, float* losses, const bf16* logits, const int32_t* targets,
                         int64_t V, int64_t Vp, float grad_scale) {
  static_assert(!STAGED || VEC == 8, "staging copies 16-byte groups");
  extern __shared__ uint4 staged_row[];
  __shared__ float shared[32];
  const int64_t n = blockIdx.x;
  const bf16* l = logits + n * Vp;
  const int32_t y = targets[n];
  const bool valid = y >= 0 && y < V;
  float ly = 0.0f;
  if (threadIdx.x == 0 && valid) ly = __bfloat162float(l[y]);
  const bf16* src = l;
  if constexpr (STAGED) {
    bf16* row = reinterpret_cast<bf16*>(staged_row);
    for (int64_t c = int64_t(threadIdx.x) * VEC; c < Vp; c += int64_t(kThreads) * VEC)
      cp_async16(smem_addr(row + c), l + c, true);
    cp_async_commit();
    cp_async_wait<0>();
    src = row;
  }

  // Sweep 1: the row max (no exponentials). Sweep 2: the sum of e^(l - max). Sweep 3: the
  // gradient. e^(l - max) = 2^(l log2 e - max log2 e): one FFMA (the product is not rounded, only
  // max log2 e is: relative error ~6e-8 |max|) and one ex2.approx (2 ulp): the exponentials are
  // what bounds this kernel's time beside memory, and expf costs several instructions more.
  float mx = -INFINITY;
  for (int64_t c = int64_t(threadIdx.x) * VEC; c < V; c += int64_t(kThreads) * VEC) {
    float f[VEC];
    load<VEC>(src + c, f);
#pragma unroll
    for (int k = 0; k < VEC; ++k)
      if (c + k < V) mx = fmaxf(mx, f[k]);
  }
  const float row_max = block_reduce(mx, Max{}, shared);
  const float shift = row_max * kLog2e;
  float sum = 0.0f;
  for (int64_t c = int64_t(threadIdx.x) * VEC; c < V; c += int64_t(kThreads) * VEC) {
    float f[VEC];
    load<VEC>(src + c, f);
#pragma unroll
    for (int k = 0; k < VEC; ++k)
      if (c + k < V) sum += ex2(fmaf(f[k], kLog2e, -shift));
  }
  const float row_sum = block_reduce(sum, Sum{}, shared);

  if (threadIdx.x == 0 && losses)
    losses[n] = valid ? float(double(row_max) + log(double(row_sum)) - double(ly)) : NAN;
  if (!dlogits) return;

  const float scale = valid ? float(double(grad_scale) / double(row_sum)) : NAN;
  bf16* g = dlogits + n * Vp;
  for (int64_t c = int64_t(threadIdx.x) * VEC; c < Vp; c += int64_t(kThreads) * VEC) {
    float f[VEC];
    load<VEC>(src + c, f);
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      const int64_t j = c + k;
      f[k] = j < V ? ex2(fmaf(f[k], kLog2e, -shift)) * scale - (j == y ? grad_scale : 0.0f)
                   : (valid ? 0.0f : NAN);
    }
    store<VEC>(g + c, f);
  }
}

// Shared bytes a block may use (opt-in limit) on the device current at the first call; a process
// drives one device (data-parallel runs start one process a GPU).
int max_block_smem() {
  int device = 0, bytes = 0;
  QUEST_CUDA_CHECK(cudaGetDevice(&device));
  QUEST_CUDA_CHECK(cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  return bytes;
}

}  // namespace

void cross_entropy(bf16* dlogits, float* losses, const bf16* logits, const int32_t* targets,
                   int64_t N, int64_t V, int64_t Vp, float grad_scale, cudaStream_t stream) {
  QUEST_CUDA_REQUIRE(N >= 0 && V > 0 && Vp >= V, "cuda::cross_entropy: bad shape N=", N, " V=", V,
                     " Vp=", Vp);
  QUEST_CUDA_REQUIRE(N <= INT32_MAX, "cuda::cross_entropy: too many rows N=", N);
  if (N == 0) return;
  const bool vec = Vp % 8 == 0 && aligned16(logits) && (!dlogits || aligned16(dlogits));
  const int64_t row_bytes = Vp * int64_t(sizeof(bf16));
  static const int smem_limit = max_block_smem();
  if (vec && row_bytes <= smem_limit) {
    const auto kernel = cross_entropy_kernel<8, true>;
    QUEST_CUDA_CHECK(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(row_bytes)));
    kernel<<<unsigned(N), kThreads, size_t(row_bytes), stream>>>(dlogits, losses, logits, targets, V,
                                                                Vp, grad_scale);
  } else if (vec) {
    cross_entropy_kernel<8, false><<<unsigned(N), kThreads, 0, stream>>>(
        dlogits, losses, logits, targets, V, Vp, grad_scale);
  } else {
    cross_entropy_kernel<1, false><<<unsigned(N), kThreads, 0, stream>>>(
        dlogits, losses, logits, targets, V, Vp, grad_scale);
  }
  QUEST_CUDA_LAUNCH_CHECK("cross_entropy_kernel");
}

}  // namespace quest::cuda
