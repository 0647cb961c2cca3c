#pragma once
// The RMSNorm backward's one-pass kernel (dx and the dw partials) and the final dw sum, templated
// on where a row's incoming gradient dout comes from: the bf16 tensor itself (rmsnorm.cu) or the
// masked input gradient of the linear layer that read the normed rows, transformed back on the
// fly (src/quant/cuda/rmsnorm_mask_backward.cu). A source only changes how the 8 values a lane
// holds are obtained; the arithmetic after that is the same, so each path is bitwise its unfused
// sequence. Device code and host launchers; include from .cu files.
//
// Grad contract (device, const): void load(int64_t n, int64_t c, bool valid, int lane,
// float (&g)[8]) gives dout[n, c .. c + 7] as the bf16 tensor would hold it (zeros where !valid).
// It is called by every lane of the warp for every group k of the row (a group is valid where
// c = (lane + 32 k) 8 < d), so a source may shuffle within the warp: lanes 16 h .. 16 h + 15 of
// group k hold the 128 columns [128 (2 k + h), 128 (2 k + h + 1)).
#include <cuda_runtime.h>

#include <cstdint>

#include "ops/cuda/common.cuh"

namespace quest::cuda::rmsnorm_rows {

using detail::load;
using detail::store;
using detail::warp_reduce;

// dw: rows per partial (one scratch row per segment). 64: the one-pass backward runs one block
// per segment, and N / 64 blocks cover the GPU (512 at 64 x 512 tokens); the final sum then adds
// N / 64 partials per column.
constexpr int64_t kDwRows = 64;
constexpr int kDwThreads = 256;  // threads per dw-partial block (8 warps)
constexpr int kFinalWarps = 16;  // warps per 32 columns of the final dw sum

inline int64_t dw_segments(int64_t N) { return (N + kDwRows - 1) / kDwRows; }

// dout read from its bf16 tensor.
struct TensorGrad {
  const bf16* dout;
  int64_t d;
  __device__ __forceinline__ void load(int64_t n, int64_t c, bool valid, int /*lane*/,
                                       float (&g)[8]) const {
    if (valid) {
      detail::load<8>(dout + n * d + c, g);
    } else {
#pragma unroll
      for (int j = 0; j < 8; ++j) g[j] = 0.0f;
    }
  }
};

// Backward, dx and the dw partials in one pass (rows up to 32 x 8 x CHUNKS columns wide, d % 8
// == 0). Block p owns the segment of kDwRows rows [kDwRows p, kDwRows (p + 1)); warp w takes its
// rows w, w + 8, ... in order; lane l owns the column groups l, l + 32, ... (8 columns each, at
// most CHUNKS of them). With g = dout * w and xhat = x * r: m = mean(g * xhat) (fp32, butterfly),
// dx += r * (g - xhat * m) in fp32; dx_copy (if not null) receives bf16(dx), the residual
// gradient as the next linear layer's backward reads it. A row's dout and x stay in registers
// between the mean and the update, so each is read once; the row's dx (read-modify-write) is
// copied into the warp's staging row in shared memory (cp.async) when the row starts, so its DRAM
// latency overlaps the loads and the reduction (each lane copies and reads back only its own
// groups: no barrier). The lane adds dout * x * r of its columns to its warp's dw sums in shared
// memory (sums[w][d], fp32, rows in order, 16-byte accesses; only that lane touches those entries
// until the barrier). Then thread t adds the 8 warps' sums in warp order for columns t, t + 256,
// ... and writes partial[p, :]. The expressions are those of rmsnorm.cu's separate dx and dw
// passes, in the same order: only the grouping of the dw sums differs. Deterministic.
template <int CHUNKS, class Grad>
__global__ void __launch_bounds__(kDwThreads)
    rmsnorm_backward_rows_kernel(float* dx, bf16* dx_copy, float* partial, Grad grad,
                                 const float* x, const float* w, const float* rstd, int64_t N,
                                 int64_t d) {
  constexpr int VEC = 8, kWarps = kDwThreads / 32;
  extern __shared__ float4 smem4[];  // [kWarps][d] dw sums, then [kWarps][d] staged dx rows
  float* sums = reinterpret_cast<float*>(smem4);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t p = blockIdx.x, n0 = p * kDwRows, n1 = min(N, n0 + kDwRows);
  float* mine = sums + warp * d;
  float* staged_dx = sums + (kWarps + warp) * d;
  for (int64_t c = int64_t(lane) * VEC; c < d; c += 32 * VEC) {
    const float zero[VEC] = {};
    store<VEC>(mine + c, zero);
  }
  for (int64_t n = n0 + warp; n < n1; n += kWarps) {
    const float* xr = x + n * d;
    float* dxr = dx + n * d;
    for (int64_t c = int64_t(lane) * VEC; c < d; c += 32 * VEC) {
      detail::cp_async16(detail::smem_addr(staged_dx + c), dxr + c, true);
      detail::cp_async16(detail::smem_addr(staged_dx + c + 4), dxr + c + 4, true);
    }
    detail::cp_async_commit();
    const float r = rstd[n];
    float g[CHUNKS][VEC], f[CHUNKS][VEC];
    float s = 0.0f;
#pragma unroll
    for (int k = 0; k < CHUNKS; ++k) {
      if (int64_t(32 * k) * VEC >= d) break;  // warp-uniform: every lane loads the group
      const int64_t c = int64_t(lane + 32 * k) * VEC;
      const bool valid = c < d;
      grad.load(n, c, valid, lane, g[k]);
      if (!valid) continue;
      float wf[VEC];
      load<VEC>(w + c, wf);
      load<VEC>(xr + c, f[k]);
#pragma unroll
      for (int j = 0; j < VEC; ++j) s += g[k][j] * wf[j] * (f[k][j] * r);
    }
    const float m = warp_reduce(s, detail::Sum{}) / float(d);
    detail::cp_async_wait<0>();
#pragma unroll
    for (int k = 0; k < CHUNKS; ++k) {
      const int64_t c = int64_t(lane + 32 * k) * VEC;
      if (c >= d) break;
      float wf[VEC], a[VEC], acc[VEC];
      load<VEC>(w + c, wf);
      load<VEC>(staged_dx + c, a);
      load<VEC>(mine + c, acc);  // 16-byte accesses: scalar ones at a 32-byte lane stride
#pragma unroll                   // conflict 8 ways
      for (int j = 0; j < VEC; ++j) {
        a[j] += r * (g[k][j] * wf[j] - f[k][j] * r * m);
        acc[j] += g[k][j] * (f[k][j] * r);
      }
      store<VEC>(mine + c, acc);
      store<VEC>(dxr + c, a);
      if (dx_copy) store<VEC>(dx_copy + n * d + c, a);
    }
  }
  __syncthreads();
  for (int64_t c = threadIdx.x; c < d; c += kDwThreads) {
    float t = sums[c];
    for (int wi = 1; wi < kWarps; ++wi) t += sums[wi * d + c];
    partial[p * d + c] = t;
  }
}

// Backward, dw. Block x owns the 32 columns [32 x, 32 x + 32); warp w of kFinalWarps adds the
// partials p = w, w + kFinalWarps, ... of its lane's column in increasing order (coalesced rows
// of 32 floats; the warps' chains run side by side, so ~segments / kFinalWarps dependent loads a
// thread instead of segments), then thread (0, lane) adds the warps' sums in warp order:
// dw[j] += that. A fixed order: deterministic. (A template only so that both including files
// may define it.)
template <int kWarps = kFinalWarps>
__global__ void __launch_bounds__(kWarps * 32)
    rmsnorm_dw_final_kernel(float* dw, const float* partial, int64_t segments, int64_t d) {
  __shared__ float sums[kWarps][32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t j = int64_t(blockIdx.x) * 32 + lane;
  float s = 0.0f;
  if (j < d)
    for (int64_t p = warp; p < segments; p += kWarps) s += partial[p * d + j];
  sums[warp][lane] = s;
  __syncthreads();
  if (warp == 0 && j < d) {
    float t = sums[0][lane];
    for (int wi = 1; wi < kWarps; ++wi) t += sums[wi][lane];
    dw[j] += t;
  }
}

template <class = void>
void launch_dw_final(float* dw, const float* partial, int64_t N, int64_t d, cudaStream_t stream) {
  rmsnorm_dw_final_kernel<><<<unsigned((d + 31) / 32), kFinalWarps * 32, 0, stream>>>(
      dw, partial, dw_segments(N), d);
  QUEST_CUDA_LAUNCH_CHECK("rmsnorm_dw_final_kernel");
}

// The one-pass backward and the final dw sum. false, launching nothing, where the row does not
// fit (d % 8 != 0 or more than 8 groups a lane); the caller checks 16-byte alignment of every
// pointer (scratch: rmsnorm_backward_scratch(N, d) floats).
template <class Grad>
bool launch_backward_rows(float* dx, bf16* dx_copy, float* dw, const Grad& grad, const float* x,
                          const float* w, const float* rstd, int64_t N, int64_t d, float* scratch,
                          cudaStream_t stream) {
  const int64_t chunks = (d / 8 + 31) / 32;  // 16-byte groups per lane
  if (d % 8 != 0 || chunks > 8) return false;
  auto run = [&](auto kernel) {
    // dw sums and staged dx rows: 80 KB at d = 1280 (two blocks an SM), 128 KB at d = 2048.
    const size_t smem = 2 * size_t(kDwThreads / 32) * size_t(d) * sizeof(float);
    if (smem > 48 * 1024)
      QUEST_CUDA_CHECK(
          cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
    kernel<<<unsigned(dw_segments(N)), kDwThreads, smem, stream>>>(dx, dx_copy, scratch, grad, x,
                                                                   w, rstd, N, d);
    QUEST_CUDA_LAUNCH_CHECK("rmsnorm_backward_rows_kernel");
  };
  if (chunks <= 2)
    run(rmsnorm_backward_rows_kernel<2, Grad>);
  else if (chunks <= 3)
    run(rmsnorm_backward_rows_kernel<3, Grad>);
  else if (chunks <= 5)
    run(rmsnorm_backward_rows_kernel<5, Grad>);
  else
    run(rmsnorm_backward_rows_kernel<8, Grad>);
  launch_dw_final(dw, scratch, N, d, stream);
  return true;
}

}  // namespace quest::cuda::rmsnorm_rows
