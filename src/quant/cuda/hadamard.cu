// The block Hadamard transform (QUEST_SPEC.md section 2) and the backward of the gradient masks
// (section 3: mask in the transform domain, then HT^T = HT back), on the device.
//
// Kernel invariants
// - hadamard_kernel, ht_mask_kernel (kept for 16-byte misaligned pointers): one warp per 128-block; the blocks of a [rows, cols] tensor
//   with cols % 128 == 0 are the contiguous 128-chunks of the flat array, block b = row
//   b / (cols / 128). Lane l holds entries 32k + l (k = 0..3) of its block (fwht128_warp's layout);
//   the warp reads its block, then writes it: in place is safe (a block has one owner).
// - ht_mask_kernel reads the two mask words of its block (words 2j, 2j + 1 of the row, j the
//   block's index in the row): entry 32k + l of the block is bit (k & 1) * 32 + l of word k >> 1.
// - ht_mask_vec_kernel (the default for transforms; ht_mask_kernel is kept for 16-byte misaligned
//   pointers and as the benchmark's old path): the same result in vec_fwht.cuh's layout, one
//   128-block per half-warp, kPairs pairs of adjacent blocks per warp (all loads first). Block b's
//   mask is bytes 16 b .. 16 b + 15 of the mask (rows of cols / 64 words = cols / 128 * 16
//   bytes, cols % 128 == 0), so lane h of its half-warp reads byte 16 b + h: its 8 entries. A warp
//   with only one valid block still transforms both halves (full-mask shuffles) and stores one.
// - mask_kernel (no transform, any cols): one thread per entry, grid-stride.
// - Accumulation (dst += result) is only used with fp32 dst and dst != src.
#include "core/error.h"
#include "ops/cuda_ops.h"
#include "quant/cuda/device_math.cuh"
#include "quant/cuda/kernels.h"
#include "quant/cuda/vec_fwht.cuh"

namespace quest::cuda {

namespace qdetail {
namespace {

constexpr int kThreads = 256;  // 8 warps = 8 blocks of 128 per CTA
constexpr int kBlocksPerCta = kThreads / 32;

unsigned grid_for_blocks(int64_t nblocks) {
  const int64_t g = (nblocks + kBlocksPerCta - 1) / kBlocksPerCta;
  QUEST_QUANT_REQUIRE(g <= int64_t(0x7fffffff), "CUDA Hadamard: tensor too large (", nblocks,
                      " blocks)");
  return unsigned(g);
}

template <class TIn, class TOut>
__global__ void __launch_bounds__(kThreads)
    hadamard_kernel(const TIn* in, TOut* out, int64_t nblocks) {
  const int64_t b = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  if (b >= nblocks) return;  // whole warps exit together
  const int lane = threadIdx.x & 31;
  const int64_t base = b * 128;
  float v[4];
#pragma unroll
  for (int k = 0; k < 4; ++k) v[k] = to_f32(in[base + 32 * k + lane]);
  fwht128_warp(v, lane);
#pragma unroll
  for (int k = 0; k < 4; ++k) out[base + 32 * k + lane] = from_f32<TOut>(v[k]);
}

template <class TS, class TD>
__global__ void __launch_bounds__(kThreads)
    ht_mask_kernel(const TS* src, TD* dst, const uint64_t* mask, int64_t nblocks,
                   int64_t blocks_per_row, int64_t wpr, bool ht_before, bool ht_after,
                   bool accumulate) {
  const int64_t b = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  if (b >= nblocks) return;
  const int lane = threadIdx.x & 31;
  const int64_t base = b * 128;
  float v[4];
#pragma unroll
  for (int k = 0; k < 4; ++k) v[k] = to_f32(src[base + 32 * k + lane]);
  if (ht_before) fwht128_warp(v, lane);
  if (mask) {
    const int64_t r = b / blocks_per_row, j = b - r * blocks_per_row;
    const uint64_t* w = mask + r * wpr + 2 * j;
    const uint64_t w0 = w[0], w1 = w[1];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const uint64_t word = (k >> 1) ? w1 : w0;
      if ((word >> ((k & 1) * 32 + lane)) & 1u) v[k] = 0.0f;
    }
  }
  if (ht_after) fwht128_warp(v, lane);
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const int64_t i = base + 32 * k + lane;
    if (accumulate)
      dst[i] = from_f32<TD>(__fadd_rn(to_f32(dst[i]), v[k]));
    else
      dst[i] = from_f32<TD>(v[k]);
  }
}

constexpr int kPairs = 2;  // block pairs per warp of ht_mask_vec_kernel

template <class TS, class TD>
__global__ void __launch_bounds__(kThreads)
    ht_mask_vec_kernel(const TS* src, TD* dst, const uint8_t* mask, int64_t nblocks,
                       bool ht_before, bool ht_after, bool accumulate) {
  const int lane = threadIdx.x & 31, hl = lane & 15, half = lane >> 4;
  const int64_t first = ((int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5) * (2 * kPairs);
  if (first >= nblocks) return;  // whole warps
  float v[kPairs][8];
  unsigned bits[kPairs];
#pragma unroll
  for (int p = 0; p < kPairs; ++p) {
    const int64_t b = first + 2 * p + half;
    bits[p] = 0;
    if (b < nblocks) {
      load8(src + 128 * b + 8 * hl, v[p]);
      if (mask) bits[p] = mask[16 * b + hl];
    } else {
#pragma unroll
      for (int e = 0; e < 8; ++e) v[p][e] = 0.0f;
    }
  }
#pragma unroll
  for (int p = 0; p < kPairs; ++p) {
    if (first + 2 * p >= nblocks) break;  // warp-uniform
    if (ht_before) fwht128_vec(v[p], lane);
#pragma unroll
    for (int e = 0; e < 8; ++e)
      if ((bits[p] >> e) & 1u) v[p][e] = 0.0f;
    if (ht_after) fwht128_vec(v[p], lane);
    const int64_t b = first + 2 * p + half;
    if (b >= nblocks) continue;
    TD* out = dst + 128 * b + 8 * hl;
    if (accumulate) {
      float d[8];
      load8(out, d);
#pragma unroll
      for (int e = 0; e < 8; ++e) v[p][e] = __fadd_rn(d[e], v[p][e]);
    }
    store8(out, v[p]);
  }
}

template <class TS, class TD>
__global__ void mask_kernel(const TS* src, TD* dst, const uint64_t* mask, int64_t rows,
                            int64_t cols, int64_t wpr, bool accumulate) {
  const int64_t n = rows * cols;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    float v = to_f32(src[i]);
    if (mask) {
      const int64_t r = i / cols, c = i - r * cols;
      if ((mask[r * wpr + (c >> 6)] >> (c & 63)) & 1u) v = 0.0f;
    }
    dst[i] = accumulate ? from_f32<TD>(__fadd_rn(to_f32(dst[i]), v)) : from_f32<TD>(v);
  }
}

__global__ void convert_kernel(bf16* out, const float* in, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    out[i] = __float2bfloat16_rn(in[i]);
}

__global__ void count_bits_kernel(unsigned long long* out, const uint64_t* words, int64_t n) {
  unsigned long long c = 0;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    c += __popcll(words[i]);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) c += __shfl_xor_sync(kFullMask, c, o);
  if ((threadIdx.x & 31) == 0 && c) atomicAdd(out, c);  // integer sum: order-independent
}

unsigned grid_stride_blocks(int64_t n) {
  const int64_t g = (n + 255) / 256;
  return unsigned(g < 1 ? 1 : (g > 65536 ? 65536 : g));
}

template <class TIn, class TOut>
void launch_hadamard(const TIn* in, TOut* out, int64_t rows, int64_t cols, cudaStream_t stream) {
  QUEST_QUANT_REQUIRE(
      rows >= 0 && cols > 0 && cols % 128 == 0,
      "CUDA Hadamard transform: the row length must be a positive multiple of 128, got ", cols);
  const int64_t nblocks = rows * (cols / 128);
  if (nblocks == 0) return;
  if (reinterpret_cast<uintptr_t>(in) % 16 == 0 && reinterpret_cast<uintptr_t>(out) % 16 == 0) {
    const int64_t warps = (nblocks + 2 * kPairs - 1) / (2 * kPairs);
    ht_mask_vec_kernel<TIn, TOut><<<grid_for_blocks(warps), kThreads, 0, stream>>>(
        in, out, nullptr, nblocks, false, true, false);
  } else {
    hadamard_kernel<TIn, TOut><<<grid_for_blocks(nblocks), kThreads, 0, stream>>>(in, out,
                                                                                 nblocks);
  }
  QUEST_CUDA_CHECK(cudaGetLastError());
}

}  // namespace

template <class TS, class TD>
void launch_mask_backward(const TS* src, TD* dst, bool accumulate, int64_t rows, int64_t cols,
                          const MaskBackward& mb, cudaStream_t stream, bool legacy) {
  QUEST_QUANT_REQUIRE(rows >= 0 && cols > 0, "CUDA mask backward: bad shape [", rows, ", ", cols,
                      "]");
  if (rows == 0) return;
  const int64_t wpr = mask_words_per_row(cols);
  if (mb.ht_before || mb.ht_after) {
    QUEST_QUANT_REQUIRE(cols % 128 == 0,
                        "CUDA mask backward: the Hadamard transform needs cols % 128 == 0, got ",
                        cols);
    const int64_t bpr = cols / 128, nblocks = rows * bpr;
    const auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
    if (!legacy && aligned(src) && aligned(dst)) {
      const int64_t warps = (nblocks + 2 * kPairs - 1) / (2 * kPairs);
      ht_mask_vec_kernel<TS, TD><<<grid_for_blocks(warps), kThreads, 0, stream>>>(
          src, dst, reinterpret_cast<const uint8_t*>(mb.mask), nblocks, mb.ht_before,
          mb.ht_after, accumulate);
    } else {
      ht_mask_kernel<TS, TD><<<grid_for_blocks(nblocks), kThreads, 0, stream>>>(
          src, dst, mb.mask, nblocks, bpr, wpr, mb.ht_before, mb.ht_after, accumulate);
    }
  } else {
    if (!mb.mask && !accumulate && static_cast<const void*>(src) == static_cast<void*>(dst))
      return;  // identity in place
    mask_kernel<TS, TD><<<grid_stride_blocks(rows * cols), 256, 0, stream>>>(
        src, dst, mb.mask, rows, cols, wpr, accumulate);
  }
  QUEST_CUDA_CHECK(cudaGetLastError());
}

template void launch_mask_backward<float, float>(const float*, float*, bool, int64_t, int64_t,
                                                 const MaskBackward&, cudaStream_t, bool);
template void launch_mask_backward<bf16, bf16>(const bf16*, bf16*, bool, int64_t, int64_t,
                                               const MaskBackward&, cudaStream_t, bool);

}  // namespace qdetail

void hadamard_rows(float* out, const float* in, int64_t rows, int64_t cols, cudaStream_t stream) {
  qdetail::launch_hadamard(in, out, rows, cols, stream);
}
void hadamard_rows(bf16* out, const float* in, int64_t rows, int64_t cols, cudaStream_t stream) {
  qdetail::launch_hadamard(in, out, rows, cols, stream);
}
void hadamard_rows(bf16* out, const bf16* in, int64_t rows, int64_t cols, cudaStream_t stream) {
  qdetail::launch_hadamard(in, out, rows, cols, stream);
}

void convert(bf16* out, const float* in, int64_t n, cudaStream_t stream) {
  QUEST_QUANT_REQUIRE(n >= 0, "CUDA convert: negative size ", n);
  if (n == 0) return;
  qdetail::convert_kernel<<<qdetail::grid_stride_blocks(n), 256, 0, stream>>>(out, in, n);
  QUEST_CUDA_CHECK(cudaGetLastError());
}

void mask_backward(float* grad, int64_t rows, int64_t cols, const MaskBackward& mb,
                   cudaStream_t stream) {
  qdetail::launch_mask_backward(grad, grad, false, rows, cols, mb, stream);
}
void mask_backward(bf16* grad, int64_t rows, int64_t cols, const MaskBackward& mb,
                   cudaStream_t stream) {
  qdetail::launch_mask_backward(grad, grad, false, rows, cols, mb, stream);
}
void mask_backward_accumulate(float* dst, const float* grad, int64_t rows, int64_t cols,
                              const MaskBackward& mb, cudaStream_t stream) {
  QUEST_QUANT_REQUIRE(dst != grad, "CUDA mask_backward_accumulate: dst must not alias grad");
  qdetail::launch_mask_backward(grad, dst, true, rows, cols, mb, stream);
}

void count_bits(unsigned long long* out, const uint64_t* words, int64_t n, cudaStream_t stream) {
  QUEST_QUANT_REQUIRE(n >= 0, "CUDA count_bits: negative size ", n);
  if (n == 0) return;
  qdetail::count_bits_kernel<<<qdetail::grid_stride_blocks(n), 256, 0, stream>>>(out, words, n);
  QUEST_CUDA_CHECK(cudaGetLastError());
}

}  // namespace quest::cuda
