// RMSNorm: out = x * rstd * w, rstd = 1 / sqrt(mean(x^2) + eps); fp32 math. The input is the
// fp32 residual stream and w the fp32 master weight (as the reference computes it, in fp32 under
// autocast); the output is the bf16 input of the next linear layer.
//
// Vector width VEC: 8 (16-byte accesses) when d % 8 == 0 and every pointer is 16-byte aligned,
// else 1. Rows are d elements; with d % 8 == 0 every row start keeps the base's alignment.
//
// add_rmsnorm_forward (the layer's residual add folded in front of the next RMSNorm): the forward
// kernel with kAdd forms x = res_in + float(branch) with add_kernel's single fp32 addition
// (elementwise.cu), writes it to res_out, and normalizes it with the same per-lane sum order as
// rmsnorm_forward on res_out, so it is BITWISE cuda::add then rmsnorm_forward. The sum order
// depends on VEC, so VEC follows rmsnorm_forward's rule on (out, res_out, w); where that rule
// gives 8 but res_in or branch is not 16-byte aligned, the two kernels run instead. The second
// pass takes (registers) or re-reads (res_out) the entries the same lane formed in the first (same
// ownership), so res_out may alias res_in.
#include "ops/cuda/common.cuh"

namespace quest::cuda {
namespace {

using namespace detail;

constexpr int kRowThreads = 256;           // 8 warps, one row each
constexpr int kRowsPerBlock = kRowThreads / 32;
// dw: rows per partial (one scratch row per segment). 64: the fused backward runs one block per
// segment, and N / 64 blocks cover the GPU (512 at 64 x 512 tokens); the final sum then adds
// N / 64 partials per column.
constexpr int64_t kDwRows = 64;
constexpr int kDwThreads = 256;            // threads per dw-partial block (8 warps)

// 16 bytes global -> shared without passing through registers (done at cp.async.wait_all).
__device__ __forceinline__ void copy16_async(float* dst, const float* src) {
  const auto d = static_cast<uint32_t>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(d), "l"(src) : "memory");
}

int64_t dw_segments(int64_t N) { return (N + kDwRows - 1) / kDwRows; }

// Forward. Warp w of block b owns row n = 8b + w; lane l owns the column groups l, l + 32, ...
// (VEC columns each). Sum of squares in fp32 per lane, then a butterfly (all lanes agree on r).
// kAdd: x is res_in, and the row normalized is res_in + branch, written to res_out first.
// CHUNKS > 0 (VEC = 8, at most CHUNKS groups a lane): the lane's entries stay in registers for
// the second pass; CHUNKS = 0: the second pass re-reads them (L1/L2), from res_out under kAdd.
// Either way the same values in the same order: the same bits.
template <int VEC, bool kAdd, int CHUNKS>
__global__ void __launch_bounds__(kRowThreads)
    rmsnorm_forward_kernel(bf16* out, float* rstd, const float* x, const bf16* branch,
                           float* res_out, const float* w, int64_t N, int64_t d, float eps) {
  static_assert(CHUNKS == 0 || VEC == 8, "registers hold 16-byte groups");
  const int64_t n = int64_t(blockIdx.x) * kRowsPerBlock + (threadIdx.x >> 5);
  if (n >= N) return;  // the whole warp
  const int lane = threadIdx.x & 31;
  // This lane's groups when held (VEC = 8, d % 8 == 0): c = (lane + 32 k) 8 < d for k < groups.
  const int64_t groups = (d / VEC - lane + 31) / 32;
  constexpr int kHeld = CHUNKS > 0 ? CHUNKS : 1;
  float held[kHeld][VEC];
  float ss = 0.0f;
  // One group: x (+ branch, stored to res_out) into f, its squares into ss.
  auto first = [&](int64_t c, float (&f)[VEC]) {
    load<VEC>(x + n * d + c, f);
    if constexpr (kAdd) {
      float fb[VEC];
      load<VEC>(branch + n * d + c, fb);
#pragma unroll
      for (int j = 0; j < VEC; ++j) f[j] += fb[j];  // add_kernel's `fa[k] += fb[k]`
      store<VEC>(res_out + n * d + c, f);
    }
#pragma unroll
    for (int j = 0; j < VEC; ++j) ss += f[j] * f[j];
  };
  if constexpr (CHUNKS > 0) {
#pragma unroll
    for (int k = 0; k < CHUNKS; ++k)
      if (k < groups) first(int64_t(lane + 32 * k) * VEC, held[k]);
  } else {
    for (int64_t c = int64_t(lane) * VEC; c < d; c += 32 * VEC) {
      float f[VEC];
      first(c, f);
    }
  }
  const float* xr = (kAdd ? res_out : x) + n * d;  // the normalized row (this lane's entries)
  ss = warp_reduce(ss, Sum{});
  const float r = 1.0f / sqrtf(ss / float(d) + eps);
  if (lane == 0) rstd[n] = r;
  bf16* o = out + n * d;
  auto second = [&](int64_t c, float (&f)[VEC]) {
    float wf[VEC];
    load<VEC>(w + c, wf);
#pragma unroll
    for (int j = 0; j < VEC; ++j) f[j] = f[j] * r * wf[j];
    store<VEC>(o + c, f);
  };
  if constexpr (CHUNKS > 0) {
#pragma unroll
    for (int k = 0; k < CHUNKS; ++k)
      if (k < groups) second(int64_t(lane + 32 * k) * VEC, held[k]);
  } else {
    for (int64_t c = int64_t(lane) * VEC; c < d; c += 32 * VEC) {
      float f[VEC];
      load<VEC>(xr + c, f);
      second(c, f);
    }
  }
}

// The forward kernel for (VEC, kAdd): registers hold the row where 16-byte groups allow it.
template <bool kAdd>
void launch_forward(bool vec, bf16* out, float* rstd, const float* x, const bf16* branch,
                    float* res_out, const float* w, int64_t N, int64_t d, float eps, cudaStream_t stream) {
  const unsigned grid = unsigned((N + kRowsPerBlock - 1) / kRowsPerBlock);
  const int64_t chunks = (d / 8 + 31) / 32;  // 16-byte groups per lane
  auto run = [&](auto kernel) {
    kernel<<<grid, kRowThreads, 0, stream>>>(out, rstd, x, branch, res_out, w, N, d, eps);
  };
  if (!vec)
    run(rmsnorm_forward_kernel<1, kAdd, 0>);
  else if (chunks <= 2)
    run(rmsnorm_forward_kernel<8, kAdd, 2>);
  else if (chunks <= 3)
    run(rmsnorm_forward_kernel<8, kAdd, 3>);
  else if (chunks <= 5)
    run(rmsnorm_forward_kernel<8, kAdd, 5>);
  else if (chunks <= 8)
    run(rmsnorm_forward_kernel<8, kAdd, 8>);
  else
    run(rmsnorm_forward_kernel<8, kAdd, 0>);
}

// Backward, dx. Same ownership as the forward. With g = dout * w and xhat = x * r:
// m = mean(g * xhat) (fp32, butterfly), dx += r * (g - xhat * m) in fp32; dx_copy (if not null)
// receives bf16(dx): the residual gradient as the next linear layer's backward reads it.
template <int VEC>
__global__ void __launch_bounds__(kRowThreads)
    rmsnorm_backward_dx_kernel(float* dx, bf16* dx_copy, const bf16* dout, const float* x,
                               const float* w, const float* rstd, int64_t N, int64_t d) {
  const int64_t n = int64_t(blockIdx.x) * kRowsPerBlock + (threadIdx.x >> 5);
  if (n >= N) return;
  const int lane = threadIdx.x & 31;
  const float* xr = x + n * d;
  const bf16* gr = dout + n * d;
  const float r = rstd[n];
  float s = 0.0f;
  for (int64_t c = int64_t(lane) * VEC; c < d; c += 32 * VEC) {
    float g[VEC], wf[VEC], f[VEC];
    load<VEC>(gr + c, g);
    load<VEC>(w + c, wf);
    load<VEC>(xr + c, f);
#pragma unroll
    for (int k = 0; k < VEC; ++k) s += g[k] * wf[k] * (f[k] * r);
  }
  const float m = warp_reduce(s, Sum{}) / float(d);
  float* dxr = dx + n * d;
  for (int64_t c = int64_t(lane) * VEC; c < d; c += 32 * VEC) {
    float g[VEC], wf[VEC], f[VEC], acc[VEC];
    load<VEC>(gr + c, g);
    load<VEC>(w + c, wf);
    load<VEC>(xr + c, f);
    load<VEC>(dxr + c, acc);
#pragma unroll
    for (int k = 0; k < VEC; ++k) acc[k] += r * (g[k] * wf[k] - f[k] * r * m);
    store<VEC>(dxr + c, acc);
    if (dx_copy) store<VEC>(dx_copy + n * d + c, acc);
  }
}

// Backward, dw partials. Grid (ceil(d / (32 VEC)), segments), kDwThreads = 8 warps per block:
// block (bx, p) owns columns [32 VEC bx, 32 VEC (bx + 1)) of rows [kDwRows p, kDwRows (p + 1));
// lane l of warp w owns VEC columns and adds rows w, w + 8, ... of the segment in order
// (dout * x * r in fp32); the 8 warps' sums are then added in warp order through shared memory
// and written to partial[p, columns] (no accumulation: every (p, column) of the scratch is
// written by exactly one thread). Fixed orders throughout: deterministic.
template <int VEC>
__global__ void __launch_bounds__(kDwThreads)
    rmsnorm_dw_partial_kernel(float* partial, const bf16* dout, const float* x, const float* rstd,
                              int64_t N, int64_t d) {
  __shared__ float sums[kDwThreads / 32][32 * VEC];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t c = (int64_t(blockIdx.x) * 32 + lane) * VEC;
  const int64_t p = blockIdx.y;
  const int64_t n0 = p * kDwRows, n1 = min(N, n0 + kDwRows);
  float acc[VEC] = {};
  if (c < d) {
    for (int64_t n = n0 + warp; n < n1; n += kDwThreads / 32) {
      float g[VEC], f[VEC];
      load<VEC>(dout + n * d + c, g);
      load<VEC>(x + n * d + c, f);
      const float r = rstd[n];
#pragma unroll
      for (int k = 0; k < VEC; ++k) acc[k] += g[k] * (f[k] * r);
    }
  }
#pragma unroll
  for (int k = 0; k < VEC; ++k) sums[warp][lane * VEC + k] = acc[k];
  __syncthreads();
  if (warp == 0 && c < d) {
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      float t = sums[0][lane * VEC + k];
      for (int w = 1; w < kDwThreads / 32; ++w) t += sums[w][lane * VEC + k];
      acc[k] = t;
    }
    store<VEC>(partial + p * d + c, acc);
  }
}

// Backward, dx and the dw partials in one pass (rows up to 32 VEC 8 columns wide). Block p owns
// the segment of kDwRows rows [kDwRows p, kDwRows (p + 1)); warp w takes its rows w, w + 8, ...
// in order, with the ownership of rmsnorm_backward_dx_kernel (lane l: column groups l, l + 32,
// ..., at most CHUNKS of them). A row's dout and x stay in registers between the mean and the
// update, so each is read once; the lane adds dout * x * r of its columns to its warp's dw sums
// in shared memory (sums[w][d], fp32, rows in order; only that lane touches those entries until
// the barrier). Then thread t adds the 8 warps' sums in warp order for columns t, t + 256, ...
// and writes partial[p, :]. dx, dx_copy and m are computed exactly as in
// rmsnorm_backward_dx_kernel (the same expressions in the same order): only the grouping of the
// dw sums differs from the separate passes. Fixed orders throughout: deterministic.
// The row's dx (read-modify-write) is copied into the warp's staging row in shared memory
// (cp.async) when the row starts, so its DRAM latency overlaps the loads and the reduction of m
// instead of following them (each lane copies and reads back only its own groups: no barrier).
template <int CHUNKS>
__global__ void __launch_bounds__(kDwThreads)
    rmsnorm_backward_fused_kernel(float* dx, bf16* dx_copy, float* partial, const bf16* dout, const float* x,
                                  const float* w, const float* rstd, int64_t N, int64_t d) {
  constexpr int VEC = 8, kWarps = kDwThreads / 32;
  extern __shared__ float sums[];  // [kWarps][d] dw sums, then [kWarps][d] staged dx rows
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
    const bf16* gr = dout + n * d;
    float* dxr = dx + n * d;
    for (int64_t c = int64_t(lane) * VEC; c < d; c += 32 * VEC) {
      copy16_async(staged_dx + c, dxr + c);
      copy16_async(staged_dx + c + 4, dxr + c + 4);
    }
    const float r = rstd[n];
    float g[CHUNKS][VEC], f[CHUNKS][VEC];
    float s = 0.0f;
#pragma unroll
    for (int k = 0; k < CHUNKS; ++k) {
      const int64_t c = int64_t(lane + 32 * k) * VEC;
      if (c >= d) break;
      float wf[VEC];
      load<VEC>(gr + c, g[k]);
      load<VEC>(w + c, wf);
      load<VEC>(xr + c, f[k]);
#pragma unroll
      for (int j = 0; j < VEC; ++j) s += g[k][j] * wf[j] * (f[k][j] * r);
    }
    const float m = warp_reduce(s, Sum{}) / float(d);
    asm volatile("cp.async.wait_all;\n" ::: "memory");
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

template <int CHUNKS>
void launch_backward_fused(float* dx, bf16* dx_copy, float* partial, const bf16* dout, const float* x,
                           const float* w, const float* rstd, int64_t N, int64_t d, cudaStream_t stream) {
  // dw sums and staged dx rows: 80 KB at d = 1280 (two blocks an SM), 128 KB at d = 2048.
  const size_t smem = 2 * size_t(kDwThreads / 32) * size_t(d) * sizeof(float);
  if (smem > 48 * 1024)
    check(cudaFuncSetAttribute(rmsnorm_backward_fused_kernel<CHUNKS>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               int(smem)),
          "cudaFuncSetAttribute(rmsnorm_backward_fused_kernel)", __FILE__, __LINE__);
  rmsnorm_backward_fused_kernel<CHUNKS><<<unsigned(dw_segments(N)), kDwThreads, smem, stream>>>(
      dx, dx_copy, partial, dout, x, w, rstd, N, d);
}

// Backward, dw. Block x owns the 32 columns [32 x, 32 x + 32); warp w of kFinalWarps adds the
// partials p = w, w + kFinalWarps, ... of its lane's column in increasing order (coalesced rows
// of 32 floats; the warps' chains run side by side, so ~segments / kFinalWarps dependent loads a
// thread instead of segments), then thread (0, lane) adds the warps' sums in warp order:
// dw[j] += that. A fixed order: deterministic.
constexpr int kFinalWarps = 16;
__global__ void __launch_bounds__(kFinalWarps * 32)
    rmsnorm_dw_final_kernel(float* dw, const float* partial, int64_t segments, int64_t d) {
  __shared__ float sums[kFinalWarps][32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t j = int64_t(blockIdx.x) * 32 + lane;
  float s = 0.0f;
  if (j < d)
    for (int64_t p = warp; p < segments; p += kFinalWarps) s += partial[p * d + j];
  sums[warp][lane] = s;
  __syncthreads();
  if (warp == 0 && j < d) {
    float t = sums[0][lane];
    for (int wi = 1; wi < kFinalWarps; ++wi) t += sums[wi][lane];
    dw[j] += t;
  }
}

}  // namespace

void rmsnorm_forward(bf16* out, float* rstd, const float* x, const float* w, int64_t N, int64_t d,
                     float eps, cudaStream_t stream) {
  QUEST_CUDA_REQUIRE(N >= 0 && d > 0, "cuda::rmsnorm_forward: bad shape N=", N, " d=", d);
  if (N == 0) return;
  const bool vec = d % 8 == 0 && aligned16(out) && aligned16(x) && aligned16(w);
  launch_forward<false>(vec, out, rstd, x, nullptr, nullptr, w, N, d, eps, stream);
  QUEST_CUDA_LAUNCH_CHECK("rmsnorm_forward_kernel");
}

void add_rmsnorm_forward(float* res_out, bf16* out, float* rstd, const float* res_in,
                         const bf16* branch, const float* w, int64_t N, int64_t d, float eps,
                         cudaStream_t stream) {
  QUEST_CUDA_REQUIRE(N >= 0 && d > 0, "cuda::add_rmsnorm_forward: bad shape N=", N, " d=", d);
  if (N == 0) return;
  // rmsnorm_forward's VEC rule on the tensors it would read (res_out, w) and write (out).
  const bool vec = d % 8 == 0 && aligned16(out) && aligned16(res_out) && aligned16(w);
  if (vec && !(aligned16(res_in) && aligned16(branch))) {
    add(res_out, res_in, branch, N * d, stream);
    rmsnorm_forward(out, rstd, res_out, w, N, d, eps, stream);
    return;
  }
  launch_forward<true>(vec, out, rstd, res_in, branch, res_out, w, N, d, eps, stream);
  QUEST_CUDA_LAUNCH_CHECK("rmsnorm_forward_kernel<add>");
}

int64_t rmsnorm_backward_scratch(int64_t N, int64_t d) { return dw_segments(N) * d; }

void rmsnorm_backward(float* dx, bf16* dx_copy, float* dw, const bf16* dout, const float* x,
                      const float* w, const float* rstd, int64_t N, int64_t d, float* scratch,
                      cudaStream_t stream) {
  QUEST_CUDA_REQUIRE(N >= 0 && d > 0, "cuda::rmsnorm_backward: bad shape N=", N, " d=", d);
  QUEST_CUDA_REQUIRE(dw_segments(N) <= 65535, "cuda::rmsnorm_backward: too many rows N=", N);
  if (N == 0) return;
  const unsigned grid = unsigned((N + kRowsPerBlock - 1) / kRowsPerBlock);
  const bool vec = d % 8 == 0 && aligned16(dx) && (!dx_copy || aligned16(dx_copy)) &&
                   aligned16(dout) && aligned16(x) && aligned16(w) && aligned16(scratch);
  const int64_t segments = dw_segments(N);
  const int64_t chunks = (d / 8 + 31) / 32;  // 16-byte groups per lane
  if (vec && chunks <= 8) {
    if (chunks <= 2)
      launch_backward_fused<2>(dx, dx_copy, scratch, dout, x, w, rstd, N, d, stream);
    else if (chunks <= 3)
      launch_backward_fused<3>(dx, dx_copy, scratch, dout, x, w, rstd, N, d, stream);
    else if (chunks <= 5)
      launch_backward_fused<5>(dx, dx_copy, scratch, dout, x, w, rstd, N, d, stream);
    else
      launch_backward_fused<8>(dx, dx_copy, scratch, dout, x, w, rstd, N, d, stream);
  } else if (vec) {
    rmsnorm_backward_dx_kernel<8><<<grid, kRowThreads, 0, stream>>>(dx, dx_copy, dout, x, w, rstd, N, d);
    QUEST_CUDA_LAUNCH_CHECK("rmsnorm_backward_dx_kernel");
    const dim3 pgrid(unsigned((d / 8 + 31) / 32), unsigned(segments));
    rmsnorm_dw_partial_kernel<8><<<pgrid, kDwThreads, 0, stream>>>(scratch, dout, x, rstd, N, d);
  } else {
    rmsnorm_backward_dx_kernel<1><<<grid, kRowThreads, 0, stream>>>(dx, dx_copy, dout, x, w, rstd, N, d);
    QUEST_CUDA_LAUNCH_CHECK("rmsnorm_backward_dx_kernel");
    const dim3 pgrid(unsigned((d + 31) / 32), unsigned(segments));
    rmsnorm_dw_partial_kernel<1><<<pgrid, kDwThreads, 0, stream>>>(scratch, dout, x, rstd, N, d);
  }
  QUEST_CUDA_LAUNCH_CHECK("rmsnorm_backward (dx, dw partials)");
  rmsnorm_dw_final_kernel<<<unsigned((d + 31) / 32), kFinalWarps * 32, 0, stream>>>(dw, scratch,
                                                                                    segments, d);
  QUEST_CUDA_LAUNCH_CHECK("rmsnorm_dw_final_kernel");
}

}  // namespace quest::cuda
