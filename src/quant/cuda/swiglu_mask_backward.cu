// The SwiGLU backward fused with the input-gradient mask and inverse transform of the down
// projection (w3) that reads g = silu(a) * b (issue 9 item 3, the backward of the fused
// producer): da, db from dg_pre = dY . W3q in one pass, where the plain sequence is
//   dg = bf16(HT(M(dg_pre)))   (CudaLinearOp's mask_input_gradient, hadamard.cu's
//                               ht_mask_vec_kernel, half form: mask, then the transform)
//   da, db = swiglu_backward(dg, a, b)
// and dg is written and read back once per layer. Same bits as that sequence: the mask and the
// transform are the same code (vec_fwht.cuh), dg is rounded to bf16 where the plain path stores
// it, and the SwiGLU gradient is swiglu.cu's expression (ops/cuda/swiglu_math.cuh).
//
// Kernel invariants (mask_ht_swiglu_backward_kernel)
// - The tensors [rows, cols] (cols % 128 == 0) are seen as their 128-blocks in order; warp w owns
//   blocks 4w .. 4w + 3 as two pairs, one block per half-warp (ht_mask_vec_kernel's ownership);
//   lane h = lane & 15 of a half holds entries 8h .. 8h + 7 of its block, read with 16-byte loads
//   of dg_pre, a and b, all issued before any use. The mask byte of those 8 entries is byte
//   16 b + h of the mask (rows of cols / 64 little-endian words).
// - A warp reads only its blocks and writes only da, db at its blocks, so da or db may alias
//   dg_pre (each entry is read before it is written, by the same lane).
// - A half-warp past the last block still runs the transform (full-warp shuffles) on zeros and
//   stores nothing.
#include "core/error.h"
#include "ops/cuda/swiglu_math.cuh"
#include "ops/cuda_ops.h"
#include "quant/cuda/cuda_quant.h"
#include "quant/cuda/kernels.h"
#include "quant/cuda/vec_fwht.cuh"

namespace quest::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kPairs = 2;  // block pairs per warp

__global__ void __launch_bounds__(kThreads)
    mask_ht_swiglu_backward_kernel(bf16* da, bf16* db, const bf16* dg_pre, const uint8_t* mask,
                                   const bf16* a, const bf16* b, int64_t nblocks) {
  const int lane = threadIdx.x & 31, hl = lane & 15, half = lane >> 4;
  const int64_t first = ((int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5) * (2 * kPairs);
  if (first >= nblocks) return;  // whole warps
  float g[kPairs][8], fa[kPairs][8], fb[kPairs][8];
  unsigned bits[kPairs];
#pragma unroll
  for (int p = 0; p < kPairs; ++p) {
    const int64_t blk = first + 2 * p + half;
    bits[p] = 0;
    if (blk < nblocks) {
      const int64_t off = 128 * blk + 8 * hl;
      qdetail::load8(dg_pre + off, g[p]);
      qdetail::load8(a + off, fa[p]);
      qdetail::load8(b + off, fb[p]);
      if (mask) bits[p] = mask[16 * blk + hl];
    } else {
#pragma unroll
      for (int e = 0; e < 8; ++e) g[p][e] = fa[p][e] = fb[p][e] = 0.0f;
    }
  }
#pragma unroll
  for (int p = 0; p < kPairs; ++p) {
    if (first + 2 * p >= nblocks) break;  // warp-uniform
#pragma unroll
    for (int e = 0; e < 8; ++e)
      if ((bits[p] >> e) & 1u) g[p][e] = 0.0f;
    qdetail::fwht128_vec(g[p], lane);
    const int64_t blk = first + 2 * p + half;
    if (blk >= nblocks) continue;
    float dg[8], ra[8], rb[8];
#pragma unroll
    for (int e = 0; e < 8; ++e)
      dg[e] = __bfloat162float(__float2bfloat16_rn(g[p][e]));  // the plain path's bf16 dg
    detail::swiglu_grads<8>(dg, fa[p], fb[p], ra, rb);
    const int64_t off = 128 * blk + 8 * hl;
    qdetail::store8(da + off, ra);
    qdetail::store8(db + off, rb);
  }
}

}  // namespace

bool mask_ht_swiglu_backward(bf16* da, bf16* db, const bf16* dg_pre, const uint64_t* mask,
                             const bf16* a, const bf16* b, int64_t rows, int64_t cols,
                             cudaStream_t stream) {
  QUEST_QUANT_REQUIRE(rows >= 0 && cols > 0, "mask_ht_swiglu_backward: bad shape [", rows, ", ",
                      cols, "]");
  const auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  if (cols % 128 != 0 || !aligned(da) || !aligned(db) || !aligned(dg_pre) || !aligned(a) ||
      !aligned(b))
    return false;
  if (rows == 0) return true;
  const int64_t nblocks = rows * (cols / 128);
  const int64_t warps = (nblocks + 2 * kPairs - 1) / (2 * kPairs);
  const int64_t grid = (warps + kThreads / 32 - 1) / (kThreads / 32);
  QUEST_QUANT_REQUIRE(grid <= int64_t(0x7fffffff), "mask_ht_swiglu_backward: tensor too large");
  mask_ht_swiglu_backward_kernel<<<unsigned(grid), kThreads, 0, stream>>>(
      da, db, dg_pre, reinterpret_cast<const uint8_t*>(mask), a, b, nblocks);
  QUEST_CUDA_CHECK(cudaGetLastError());
  return true;
}

}  // namespace quest::cuda
