// The RMSNorm backward fused with the input-gradient mask and inverse transform of the layer(s)
// reading the normed rows (qkv; w1 and w2), half form: where the plain sequence is
//   dln = bf16(HT(M(dln_pre)))  (CudaLinearOp's mask_input_gradient: hadamard.cu's
//                                ht_mask_vec_kernel, mask, then the transform)
//   dx += rmsnorm_backward(dln, x, w, rstd), dw += ...
// this reads dln_pre once and never writes dln. Same bits as that sequence: the mask and the
// transform are the same code (vec_fwht.cuh), the result is rounded to bf16 where the plain path
// stores it, and the RMSNorm arithmetic is rmsnorm.cu's (ops/cuda/rmsnorm_backward_rows.cuh).
//
// Invariants of MaskedHtGrad::load (the Grad contract of rmsnorm_backward_rows.cuh): lane l of
// group k holds columns c = 8 (l + 32 k) .. c + 7, so half-warp h of the group holds 128-block
// 2 k + h of the row with its lanes in block order: ht_mask_vec_kernel's layout, as fwht128_vec
// needs (d % 128 == 0). The mask byte of those 8 columns is byte (n d + c) / 8 of the mask (rows
// of d / 64 little-endian words). Lanes past the row's end transform zeros (full-warp shuffles).
#include "core/error.h"
#include "ops/cuda/rmsnorm_backward_rows.cuh"
#include "quant/cuda/cuda_quant.h"
#include "quant/cuda/kernels.h"
#include "quant/cuda/vec_fwht.cuh"

namespace quest::cuda {
namespace {

struct MaskedHtGrad {
  const bf16* dln_pre;
  const uint8_t* mask;  // null: the transform alone
  int64_t d;
  __device__ __forceinline__ void load(int64_t n, int64_t c, bool valid, int lane,
                                       float (&g)[8]) const {
    unsigned bits = 0;
    if (valid) {
      qdetail::load8(dln_pre + n * d + c, g);
      if (mask) bits = mask[(n * d + c) / 8];
    } else {
#pragma unroll
      for (int e = 0; e < 8; ++e) g[e] = 0.0f;
    }
#pragma unroll
    for (int e = 0; e < 8; ++e)
      if ((bits >> e) & 1u) g[e] = 0.0f;
    qdetail::fwht128_vec(g, lane);
#pragma unroll
    for (int e = 0; e < 8; ++e) g[e] = __bfloat162float(__float2bfloat16_rn(g[e]));  // dln's bf16
  }
};

}  // namespace

bool mask_ht_rmsnorm_backward(float* dx, bf16* dx_copy, float* dw, const bf16* dln_pre,
                              const uint64_t* mask, const float* x, const float* w,
                              const float* rstd, int64_t N, int64_t d, float* scratch,
                              cudaStream_t stream) {
  QUEST_QUANT_REQUIRE(N >= 0 && d > 0, "mask_ht_rmsnorm_backward: bad shape N=", N, " d=", d);
  QUEST_QUANT_REQUIRE(rmsnorm_rows::dw_segments(N) <= 65535,
                      "mask_ht_rmsnorm_backward: too many rows N=", N);
  const auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  if (d % 128 != 0 || !aligned(dx) || (dx_copy && !aligned(dx_copy)) || !aligned(dln_pre) ||
      !aligned(x) || !aligned(w) || !aligned(scratch))
    return false;
  if (N == 0) return true;
  const MaskedHtGrad grad{dln_pre, reinterpret_cast<const uint8_t*>(mask), d};
  return rmsnorm_rows::launch_backward_rows(dx, dx_copy, dw, grad, x, w, rstd, N, d, scratch,
                                            stream);
}

}  // namespace quest::cuda
