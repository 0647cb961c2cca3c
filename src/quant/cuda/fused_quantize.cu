// The Half-form quantizer of the grid family with the transform fused into its producer (issue 9
// item 3): RMSNorm in front of the QKV / w1 / w2 input, SwiGLU in front of the down projection's
// (w3). One pass reads the producer's inputs and writes the quantizer's outputs (xq, mask, step,
// optionally int8 codes) and the producer's side outputs (rstd; optionally ln / g), instead of the
// producer writing a bf16 tensor that the quantizer reads back.
//
// Contract: BITWISE the unfused sequence, rmsnorm_forward (src/ops/cuda/rmsnorm.cu) or
// swiglu_forward (src/ops/cuda/swiglu.cu) followed by DeviceQuantizer::forward(_with_codes) in the
// Half form (tests/cuda/test_cuda_fused_quantize.cu). The quantizer part is ht_grid_rows_kernel
// itself (ht_row_kernel.cuh; its invariants are at the top of ht_row_quantize.cu); only its
// Source differs.
//
// Kernel invariants (the sources)
// - The quantizer sees the producer's output rounded to bf16 (from_f32's round to nearest even),
//   as it would read it back from the bf16 tensor, and the optional ln / g store writes those
//   same bf16 values (store8: one rounding, as the producers' store<8>).
// - RMSNorm: values bf16(x * r * w) with the expressions of rmsnorm_forward_kernel<8> (fp32,
//   (x * r) * w); r = 1 / sqrtf(ss / d + eps) where ss is ITS sum of squares: lane l adds
//   x[c]^2 for the 8-column groups l, l + 32, ... in order (the same `ss += f * f`, contracted to
//   an FMA the same way), then the xor butterfly 16 .. 1. The team layout holds other columns per
//   lane, so the raw fp32 row is staged in the team's shared row buffer (the buffer the transform
//   stages into later; a team barrier before and after), and EVERY warp of the team sums it in
//   the RMSNorm layout (redundant, but no extra barrier or broadcast). Team warp 0, lane 0 writes
//   rstd[r]. Requires d % 8 == 0 and 16-byte aligned x, w (rmsnorm_forward's VEC = 8 path; the
//   VEC = 1 path sums in another order) - implied by cols % 128 and the launcher's checks.
// - SwiGLU: g = bf16(a * sigmoid(a) * b), sigmoid(a) = 1 / (1 + expf(-a)), swiglu_fwd's
//   expressions (ops/cuda/swiglu_math.cuh's swiglu_values); elementwise, so no staging.
// - RMSNorm with the residual add (kAdd; the layer's residual connection folded in front): the
//   row is x = res_in + float(branch), the same single fp32 addition as cuda::add's add_kernel
//   (src/ops/cuda/elementwise.cu, `fa += fb`), formed in load() and written to res_out (fp32, the
//   next residual and the backward's input) before anything else uses it; everything after is the
//   RMSNorm source above on those fp32 values. So the outputs are bitwise cuda::add followed by
//   the plain RMSNorm path. Each lane reads res_in / branch and writes res_out only at its own
//   entries (the team layout's 8-column groups), so res_out may alias res_in; branch must not
//   alias res_out. Requires 16-byte aligned res_in, branch, res_out.
// - Each lane writes only its own entries of ln / g / res_out (the team layout's); x, w, a, b,
//   branch are only read.
#include "core/error.h"
#include "ops/cuda/swiglu_math.cuh"
#include "ops/cuda_ops.h"
#include "quant/cuda/ht_row_kernel.cuh"
#include "quant/cuda/kernels.h"

namespace quest::cuda::qdetail {

namespace {

__device__ __forceinline__ void round_bf16_8(float (&v)[8]) {
#pragma unroll
  for (int k = 0; k < 8; ++k) v[k] = __bfloat162float(__float2bfloat16_rn(v[k]));
}

// kAdd: the residual add in front (see the invariants); a template parameter so that the plain
// source's code (and its register use, at the 64-register cap) stays as it was.
template <bool kAdd>
struct RmsNormSource {
  const float* x;  // [rows, cols] the fp32 residual stream (kAdd: res_in)
  const float* w;  // [cols] the fp32 norm weight
  float eps;
  float* rstd;  // [rows]
  bf16* ln;     // [rows, cols] or null
  const bf16* branch = nullptr;  // kAdd: [rows, cols] the branch output added to x
  float* res_out = nullptr;      // kAdd: [rows, cols] receives x + branch

  __device__ __forceinline__ void load(const RowCtx& c, int col, float (&v)[8]) const {
    const int64_t off = c.r * c.cols + col;
    load8(x + off, v);
    if constexpr (kAdd) {
      float fb[8];
      load8(branch + off, fb);
#pragma unroll
      for (int k = 0; k < 8; ++k) v[k] += fb[k];  // add_kernel's `fa[k] += fb[k]`
      store8(res_out + off, v);
    }
  }
  __device__ __forceinline__ void prefetch(int64_t r, int cols) const {
    prefetch_row_l2(x, r, cols);
    if constexpr (kAdd) prefetch_row_l2(branch, r, cols);
  }

  template <int S>
  __device__ __forceinline__ void finish(float (&v)[S][8], const RowCtx& c) const {
    const int hl = c.lane & 15, half = c.lane >> 4;
    // Stage the raw row for the sum in rmsnorm_forward_kernel's lane layout.
#pragma unroll
    for (int s = 0; s < S; ++s) {
      const int b = c.first + s * c.stride + half;
      if (c.first + s * c.stride >= c.nblk) break;  // warp-uniform
      if (b < c.nblk) store8(c.row + 128 * b + 8 * hl, v[s]);
    }
    team_sync(c.team, c.P);
    float ss = 0.0f;
    for (int col = c.lane * 8; col < c.cols; col += 32 * 8) {
      float f[8];
      load8(c.row + col, f);
#pragma unroll
      for (int k = 0; k < 8; ++k) ss += f[k] * f[k];
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) ss = ss + __shfl_xor_sync(kFullMask, ss, o);  // warp_reduce
    const float r = 1.0f / sqrtf(ss / float(c.cols) + eps);
    if (c.tw == 0 && c.lane == 0) rstd[c.r] = r;
    bf16* lr = ln ? ln + c.r * c.cols : nullptr;
#pragma unroll
    for (int s = 0; s < S; ++s) {
      const int b = c.first + s * c.stride + half;
      if (c.first + s * c.stride >= c.nblk) break;
      if (b < c.nblk) {
        float wf[8];
        load8(w + 128 * b + 8 * hl, wf);
#pragma unroll
        for (int k = 0; k < 8; ++k) v[s][k] = v[s][k] * r * wf[k];
        if (lr) store8(lr + 128 * b + 8 * hl, v[s]);
        round_bf16_8(v[s]);
      }
    }
    team_sync(c.team, c.P);  // every warp has summed the staged row: the buffer is free
  }
};

struct SwigluSource {
  const bf16* a;  // [rows, cols]
  const bf16* b;  // [rows, cols]
  bf16* g;        // [rows, cols] or null

  __device__ __forceinline__ void load(const RowCtx& c, int col, float (&v)[8]) const {
    const int64_t off = c.r * c.cols + col;
    float fa[8], fb[8];
    load8(a + off, fa);
    load8(b + off, fb);
    detail::swiglu_values<8>(fa, fb, v);
    if (g) store8(g + off, v);
    round_bf16_8(v);
  }
  __device__ __forceinline__ void prefetch(int64_t r, int cols) const {
    prefetch_row_l2(a, r, cols);
    prefetch_row_l2(b, r, cols);
  }
  template <int S>
  __device__ __forceinline__ void finish(float (&)[S][8], const RowCtx&) const {}
};

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

bool launch_rmsnorm_ht_grid_rows(const float* x, const bf16* branch, float* res_out,
                                 const float* w, float eps, float* rstd, bf16* ln, bf16* xq,
                                 const RowQuantArgs& a, cudaStream_t stream) {
  if (!ht_rows_shape_ok(a) || a.ht_out || !aligned16(x) || !aligned16(w) || !aligned16(xq) ||
      (ln && !aligned16(ln)) || !rstd)
    return false;
  if (!branch != !res_out) return false;  // both or neither (the caller's check)
  if (branch) {
    if (!aligned16(branch) || !aligned16(res_out)) return false;
    launch_ht_rows(RmsNormSource<true>{x, w, eps, rstd, ln, branch, res_out}, xq, a, stream);
  } else {
    launch_ht_rows(RmsNormSource<false>{x, w, eps, rstd, ln}, xq, a, stream);
  }
  return true;
}

bool launch_swiglu_ht_grid_rows(const bf16* a_in, const bf16* b_in, bf16* g, bf16* xq,
                                const RowQuantArgs& a, cudaStream_t stream) {
  if (!ht_rows_shape_ok(a) || a.ht_out || !aligned16(a_in) || !aligned16(b_in) ||
      !aligned16(xq) || (g && !aligned16(g)))
    return false;
  launch_ht_rows(SwigluSource{a_in, b_in, g}, xq, a, stream);
  return true;
}

}  // namespace quest::cuda::qdetail
