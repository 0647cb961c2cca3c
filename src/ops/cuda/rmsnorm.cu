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
#include "ops/cuda/rmsnorm_backward_rows.cuh"

namespace quest::cuda {
namespace {

using namespace detail;

constexpr int kRowThreads = 256;           // 8 warps, one row each
constexpr int kRowsPerBlock = kRowThreads / 32;
using namespace rmsnorm_rows;

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
  if (vec && launch_backward_rows(dx, dx_copy, dw, TensorGrad{dout, d}, x, w, rstd, N, d, scratch,
                                  stream))
    return;
  if (vec) {
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
  launch_dw_final(dw, scratch, N, d, stream);
}

}  // namespace quest::cuda
