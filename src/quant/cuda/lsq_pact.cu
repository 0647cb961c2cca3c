// LSQ and PACT on the device (QUEST_SPEC.md section 4), matching src/quant/lsq.cpp and pact.cpp
// operation for operation. The learned value stays on the device: no host round trip per step.
//
// Kernel invariants
// - learned_row_sums_kernel, learned_forward_kernel, learned_backward_kernel: one CTA per row
//   (blockDim.x a multiple of 32, at most 256); the CTA owns row r of x/xq (or grad/dst), of the
//   masks, of dstep, and row_sum[r]. Entries go by 64-entry mask words: warp w takes words
//   w, w + warps, ...; lane l handles entries 64k + l and 64k + 32 + l; ballots form the words, so
//   every mask word of the row is written (padding bits 0). Each entry is read and written by one
//   thread: xq may alias x, dst may alias grad (not when accumulating).
// - param[0] (the value) is only written by learned_init_kernel, which runs on one CTA and only
//   when the value is 0; learned_forward_kernel's CTA 0 writes param[2] (the sign);
//   learned_grad_kernel (one CTA) adds to param[1]. Stream order separates them.
// - Reductions: per-row double sums in a fixed order (block_sum), then one CTA of 1024 threads
//   sums the rows (thread t takes rows t, t + 1024, ... in order, then block_sum): deterministic.
#include <cmath>

#include "core/error.h"
#include "ops/cuda_ops.h"
#include "quant/cuda/device_math.cuh"
#include "quant/cuda/kernels.h"

namespace quest::cuda::qdetail {

namespace {

constexpr int kReduceThreads = 1024;
constexpr float kMinValue = 1e-8f;  // LsqQuantizer::kMinStep, PACT's floor on |alpha|

// std::max(std::fabs(v), kMinValue)
__device__ __forceinline__ float abs_floor(float v) {
  const float a = fabsf(v);
  return a < kMinValue ? kMinValue : a;
}

// Per-row sums for the initialization: LSQ sum |x|, PACT sum x^2 (double). Skipped once the value
// is set.
template <bool Lsq, class TIn>
__global__ void __launch_bounds__(kMaxRowThreads)
    learned_row_sums_kernel(const TIn* x, int64_t cols, const float* param, double* row_sum) {
  if (param[0] != 0.0f) return;  // uniform over the grid
  __shared__ double red[32];
  const int64_t r = blockIdx.x;
  const TIn* xr = x + r * cols;
  double s = 0.0;
  for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) {
    const float v = to_f32(xr[i]);
    if constexpr (Lsq)
      s += fabsf(v);
    else
      s += double(v) * double(v);  // exact product
  }
  s = block_sum(s, red);
  if (threadIdx.x == 0) row_sum[r] = s;
}

// Sum of row_sum[0, rows) by one CTA of kReduceThreads threads (fixed order). Valid in thread 0.
__device__ __forceinline__ double sum_rows(const double* row_sum, int64_t rows, double* red) {
  double t = 0.0;
  for (int64_t i = threadIdx.x; i < rows; i += blockDim.x) t += row_sum[i];
  return block_sum(t, red);
}

// LSQ: s = float(2 * mean|x| / sqrt(qmax)); PACT: alpha = float(ALPHA[b] * sqrt(mean x^2)); a
// non-positive result (all-zero data) becomes 1e-8.
__global__ void __launch_bounds__(kReduceThreads)
    learned_init_kernel(float* param, const double* row_sum, LearnedArgs a) {
  if (param[0] != 0.0f)
    return;  // uniform: every thread reads before thread 0 writes (block_sum syncs)
  __shared__ double red[32];
  const double total = sum_rows(row_sum, a.rows, red);
  if (threadIdx.x == 0) {
    const double numel = double(a.rows * a.cols);
    float v;
    if (a.lsq) {
      const double qmax = double((1 << (a.bits - 1)) - 1);
      v = __double2float_rn(__ddiv_rn(__dmul_rn(2.0, __ddiv_rn(total, numel)), __dsqrt_rn(qmax)));
    } else {
      v = __double2float_rn(__dmul_rn(a.alpha, __dsqrt_rn(__ddiv_rn(total, numel))));
    }
    if (!(v > 0.0f)) v = 1e-8f;
    param[0] = v;
  }
}

template <bool Lsq, class TIn, class TOut>
__global__ void __launch_bounds__(kMaxRowThreads)
    learned_forward_kernel(const TIn* x, TOut* xq, LearnedArgs a) {
  const int64_t r = blockIdx.x, cols = a.cols, wpr = (cols + 63) / 64;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  const float p = a.param[0];
  if (r == 0 && threadIdx.x == 0) a.param[2] = p < 0.0f ? -1.0f : 1.0f;
  const TIn* xr = x + r * cols;
  TOut* qr = xq + r * cols;
  if constexpr (Lsq) {
    // LsqQuantizer::forward
    const float qmin = -float(1 << (a.bits - 1)), qmax = float((1 << (a.bits - 1)) - 1);
    const float s = abs_floor(p), inv = __fdiv_rn(1.0f, s);
    if (a.step && threadIdx.x == 0) a.step[r] = s;
    float* dr = a.dstep + r * cols;
    for (int64_t w = warp; w < wpr; w += warps) {
      bool m[2] = {false, false};
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int64_t i = w * 64 + 32 * h + lane;
        if (i >= cols) continue;
        const float xs = __fmul_rn(to_f32(xr[i]), inv);
        const float u = __fsub_rn(xs, 0.5f);
        float q, d;
        if (u < qmin) {
          q = qmin, d = __fadd_rn(qmin, 0.5f), m[h] = true;
        } else if (u > qmax) {
          q = qmax, d = __fadd_rn(qmax, 0.5f), m[h] = true;
        } else {
          q = rintf(u);
          d = __fsub_rn(__fadd_rn(q, 0.5f), xs);
        }
        dr[i] = d;
        qr[i] = from_f32<TOut>(__fmul_rn(__fadd_rn(q, 0.5f), s));
      }
      const unsigned lo = __ballot_sync(kFullMask, m[0]), hi = __ballot_sync(kFullMask, m[1]);
      if (lane == 0) a.mask[r * wpr + w] = (uint64_t(hi) << 32) | uint64_t(lo);
    }
  } else {
    // PactQuantizer::forward: the centered grid on [-|alpha|, |alpha|]; clipped: |x| >= |alpha|.
    const DevGrid g = make_grid(a.bits, abs_floor(p));
    if (a.step && threadIdx.x == 0) a.step[r] = g.step;
    for (int64_t w = warp; w < wpr; w += warps) {
      bool m[2] = {false, false}, n[2] = {false, false};
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int64_t i = w * 64 + 32 * h + lane;
        if (i >= cols) continue;
        const float v = to_f32(xr[i]);
        if (!(fabsf(v) < g.scale)) {
          m[h] = true;
          n[h] = v < 0.0f;
        }
        qr[i] = from_f32<TOut>(grid_quantize(v, g));
      }
      const unsigned lo = __ballot_sync(kFullMask, m[0]), hi = __ballot_sync(kFullMask, m[1]);
      const unsigned nlo = __ballot_sync(kFullMask, n[0]), nhi = __ballot_sync(kFullMask, n[1]);
      if (lane == 0) {
        a.mask[r * wpr + w] = (uint64_t(hi) << 32) | uint64_t(lo);
        a.negative[r * wpr + w] = (uint64_t(nhi) << 32) | uint64_t(nlo);
      }
    }
  }
}

// x's gradient (mask applied) and the row's share of the learned value's gradient:
// LSQ sum g * dxq/ds over all entries, PACT sum over clipped entries of g * sign(x).
template <bool Lsq, class TS, class TD>
__global__ void __launch_bounds__(kMaxRowThreads)
    learned_backward_kernel(const TS* grad, TD* dst, bool accumulate, LearnedArgs a) {
  __shared__ double red[32];
  const int64_t r = blockIdx.x, cols = a.cols, wpr = (cols + 63) / 64;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  const TS* gr = grad + r * cols;
  TD* dr = dst + r * cols;
  double s = 0.0;
  for (int64_t w = warp; w < wpr; w += warps) {
    const uint64_t mw = a.mask[r * wpr + w];
    const uint64_t nw = Lsq ? 0 : a.negative[r * wpr + w];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t i = w * 64 + 32 * h + lane;
      if (i >= cols) continue;
      const int bit = 32 * h + lane;
      const bool masked = (mw >> bit) & 1u;
      const float g = to_f32(gr[i]);
      if constexpr (Lsq) {
        s += double(g) * double(a.dstep[r * cols + i]);  // exact product
      } else if (masked) {
        s += ((nw >> bit) & 1u) ? -double(g) : double(g);
      }
      const float out = masked ? 0.0f : g;
      dr[i] = accumulate ? from_f32<TD>(__fadd_rn(to_f32(dr[i]), out)) : from_f32<TD>(out);
    }
  }
  s = block_sum(s, red);
  if (threadIdx.x == 0) a.row_sum[r] = s;
}

// param[1] += param[2] * float(total / divisor)   (LSQ: divisor sqrt(numel * qmax); PACT: 1).
__global__ void __launch_bounds__(kReduceThreads)
    learned_grad_kernel(float* param, const double* row_sum, int64_t rows, double divisor) {
  __shared__ double red[32];
  const double total = sum_rows(row_sum, rows, red);
  if (threadIdx.x == 0)
    param[1] =
        __fadd_rn(param[1], __fmul_rn(param[2], __double2float_rn(__ddiv_rn(total, divisor))));
}

void check_args(const LearnedArgs& a) {
  QUEST_QUANT_REQUIRE(a.rows >= 0 && a.rows <= int64_t(0x7fffffff) && a.cols > 0, "CUDA ",
                      a.lsq ? "LSQ" : "PACT", ": bad shape [", a.rows, ", ", a.cols, "]");
  QUEST_QUANT_REQUIRE(a.bits >= (a.lsq ? 2 : 1) && a.bits <= 8, "CUDA ", a.lsq ? "LSQ" : "PACT",
                      ": bits ", a.bits, " out of range");
  QUEST_QUANT_REQUIRE(
      a.param && a.mask && a.row_sum && (a.lsq ? a.dstep != nullptr : a.negative != nullptr),
      "CUDA ", a.lsq ? "LSQ" : "PACT", ": missing state buffers");
}

}  // namespace

template <class TIn, class TOut>
void launch_learned_forward(const TIn* x, TOut* xq, const LearnedArgs& a, cudaStream_t stream) {
  check_args(a);
  if (a.rows == 0) return;
  const unsigned rows = unsigned(a.rows);
  const int threads = row_kernel_threads(a.cols);
  if (a.lsq) {
    learned_row_sums_kernel<true, TIn><<<rows, threads, 0, stream>>>(x, a.cols, a.param, a.row_sum);
  } else {
    learned_row_sums_kernel<false, TIn>
        <<<rows, threads, 0, stream>>>(x, a.cols, a.param, a.row_sum);
  }
  QUEST_CUDA_CHECK(cudaGetLastError());
  learned_init_kernel<<<1, kReduceThreads, 0, stream>>>(a.param, a.row_sum, a);
  QUEST_CUDA_CHECK(cudaGetLastError());
  if (a.lsq)
    learned_forward_kernel<true, TIn, TOut><<<rows, threads, 0, stream>>>(x, xq, a);
  else
    learned_forward_kernel<false, TIn, TOut><<<rows, threads, 0, stream>>>(x, xq, a);
  QUEST_CUDA_CHECK(cudaGetLastError());
}

template <class TS, class TD>
void launch_learned_backward(const TS* grad, TD* dst, bool accumulate, const LearnedArgs& a,
                             cudaStream_t stream) {
  check_args(a);
  if (a.rows == 0) return;
  const unsigned rows = unsigned(a.rows);
  const int threads = row_kernel_threads(a.cols);
  if (a.lsq)
    learned_backward_kernel<true, TS, TD><<<rows, threads, 0, stream>>>(grad, dst, accumulate, a);
  else
    learned_backward_kernel<false, TS, TD><<<rows, threads, 0, stream>>>(grad, dst, accumulate, a);
  QUEST_CUDA_CHECK(cudaGetLastError());
  // LsqQuantizer::backward: 1 / sqrt(numel * qmax), the LSQ gradient scale; PACT: unscaled.
  const double divisor =
      a.lsq ? std::sqrt(double(a.rows * a.cols) * double((1 << (a.bits - 1)) - 1)) : 1.0;
  learned_grad_kernel<<<1, kReduceThreads, 0, stream>>>(a.param, a.row_sum, a.rows, divisor);
  QUEST_CUDA_CHECK(cudaGetLastError());
}

template void launch_learned_forward<float, float>(const float*, float*, const LearnedArgs&,
                                                   cudaStream_t);
template void launch_learned_forward<float, bf16>(const float*, bf16*, const LearnedArgs&,
                                                  cudaStream_t);
template void launch_learned_forward<bf16, bf16>(const bf16*, bf16*, const LearnedArgs&,
                                                 cudaStream_t);
template void launch_learned_forward<bf16, float>(const bf16*, float*, const LearnedArgs&,
                                                  cudaStream_t);
template void launch_learned_backward<float, float>(const float*, float*, bool, const LearnedArgs&,
                                                    cudaStream_t);
template void launch_learned_backward<bf16, bf16>(const bf16*, bf16*, bool, const LearnedArgs&,
                                                  cudaStream_t);

}  // namespace quest::cuda::qdetail
