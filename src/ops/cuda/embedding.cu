// Token embedding lookup and its scatter-add backward (deterministic, no atomics).
//
// Token ids live on the device, so they cannot be validated on the host: a NEGATIVE id gives a
// row of NaN in the forward (loud downstream) and is skipped in the backward; ids past the end of
// the table (whose row count is not passed) are the caller's to prevent, as on the CPU.
#include "ops/cuda/common.cuh"

namespace quest::cuda {
namespace {

using namespace detail;

// Forward (fp32 table: the master weight, as the reference reads it; fp32 out: the residual
// stream). 256-thread blocks, grid-stride over N * (d / VEC) items; item i = (row n, group c)
// copies VEC columns of table[tokens[n]] to out[n]. VEC = 4: d % 4 == 0 and both pointers
// 16-byte aligned, one 16-byte copy per item; VEC = 1 otherwise.
template <int VEC>
__global__ void embedding_forward_kernel(float* out, const int32_t* tokens, const float* table,
                                         int64_t N, int64_t d) {
  const int64_t groups = d / VEC, items = N * groups;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < items; i += stride) {
    const int64_t n = i / groups, c = (i - n * groups) * VEC;
    const int32_t tok = tokens[n];
    float* o = out + n * d + c;
    if constexpr (VEC == 4) {
      const float q = __int_as_float(0x7fc00000);
      *reinterpret_cast<float4*>(o) =
          tok < 0 ? make_float4(q, q, q, q) : *reinterpret_cast<const float4*>(table + int64_t(tok) * d + c);
    } else {
      *o = tok < 0 ? __int_as_float(0x7fc00000) : table[int64_t(tok) * d + c];
    }
  }
}

// Backward. One block of kThreads per row n0 (grid N). The block of a token's FIRST occurrence
// owns table row tokens[n0]; blocks of later occurrences see the token in tokens[0, n0) and exit.
// The owner walks rows m >= n0 in chunks of kThreads: the rows whose token matches are compacted,
// in increasing order, into shared memory (warp ballots + fixed warp offsets), then each thread
// adds those rows to its own columns (VEC at a time: 8 with d % 8 == 0 and aligned pointers, else
// 1) as acc = dtable; acc += dout[m1]; acc += dout[m2]; ... in fp32. That is exactly the CPU's
// order, so the result is bitwise the CPU's and does not depend on scheduling.
// Cost: each block reads tokens[0, N) once (N^2 int loads over the grid, from L2; fine for the
// micro-batch sizes used, N of a few thousand).
constexpr int kThreads = 256;

template <int VEC>
__global__ void __launch_bounds__(kThreads)
    embedding_backward_kernel(float* dtable, const float* dout, const int32_t* tokens, int64_t N,
                              int64_t d) {
  __shared__ int64_t rows[kThreads];
  __shared__ int warp_count[kThreads / 32];
  const int64_t n0 = blockIdx.x;
  const int32_t tok = tokens[n0];
  if (tok < 0) return;  // uniform over the block
  bool earlier = false;
  for (int64_t m = threadIdx.x; m < n0; m += kThreads) earlier |= tokens[m] == tok;
  if (__syncthreads_or(earlier)) return;

  float* dst = dtable + int64_t(tok) * d;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int64_t base = n0; base < N; base += kThreads) {  // uniform loop: all threads iterate
    const int64_t m = base + threadIdx.x;
    const bool match = m < N && tokens[m] == tok;
    const unsigned ballot = __ballot_sync(kFullMask, match);
    if (lane == 0) warp_count[warp] = __popc(ballot);
    __syncthreads();
    int offset = 0, total = 0;
    for (int w = 0; w < kThreads / 32; ++w) {
      offset += w < warp ? warp_count[w] : 0;
      total += warp_count[w];
    }
    if (match) rows[offset + __popc(ballot & ((1u << lane) - 1u))] = m;
    __syncthreads();
    if (total > 0) {
      for (int64_t c = int64_t(threadIdx.x) * VEC; c < d; c += int64_t(kThreads) * VEC) {
        float acc[VEC];
        load<VEC>(dst + c, acc);
        for (int r = 0; r < total; ++r) {
          float f[VEC];
          load<VEC>(dout + rows[r] * d + c, f);
#pragma unroll
          for (int k = 0; k < VEC; ++k) acc[k] += f[k];
        }
        store<VEC>(dst + c, acc);
      }
    }
    __syncthreads();  // rows and warp_count are rewritten by the next chunk
  }
}

}  // namespace

void embedding_forward(float* out, const int32_t* tokens, const float* table, int64_t N, int64_t d,
                       cudaStream_t stream) {
  QUEST_CUDA_REQUIRE(N >= 0 && d >= 0, "cuda::embedding_forward: negative shape N=", N, " d=", d);
  if (N == 0 || d == 0) return;
  if (d % 4 == 0 && aligned16(out) && aligned16(table)) {
    embedding_forward_kernel<4><<<grid_for(N * d / 4, 256), 256, 0, stream>>>(out, tokens, table, N, d);
  } else {
    embedding_forward_kernel<1><<<grid_for(N * d, 256), 256, 0, stream>>>(out, tokens, table, N, d);
  }
  QUEST_CUDA_LAUNCH_CHECK("embedding_forward_kernel");
}

void embedding_backward(float* dtable, const float* dout, const int32_t* tokens, int64_t N, int64_t d,
                        cudaStream_t stream) {
  QUEST_CUDA_REQUIRE(N >= 0 && d >= 0, "cuda::embedding_backward: negative shape N=", N, " d=", d);
  QUEST_CUDA_REQUIRE(N <= INT32_MAX, "cuda::embedding_backward: too many rows N=", N);
  if (N == 0 || d == 0) return;
  if (d % 8 == 0 && aligned16(dtable) && aligned16(dout)) {
    embedding_backward_kernel<8><<<unsigned(N), kThreads, 0, stream>>>(dtable, dout, tokens, N, d);
  } else {
    embedding_backward_kernel<1><<<unsigned(N), kThreads, 0, stream>>>(dtable, dout, tokens, N, d);
  }
  QUEST_CUDA_LAUNCH_CHECK("embedding_backward_kernel");
}

}  // namespace quest::cuda
