#pragma once
// Building blocks shared by the flash-attention kernels (attention_forward.cu,
// attention_backward.cu): tensor-core fragments (mma.sync m16n8k16 bf16 -> fp32), ldmatrix,
// cp.async tile loads with zero fill, and the tile store. Device code only; include from .cu files.
//
// Fragment layouts of mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 (PTX ISA), for lane
// l of a warp, g = l / 4 ("group", 0..7) and q = l % 4 ("thread in group", 0..3):
//   A (16 x 16, row-major), 4 x b32 = 8 bf16:  a0 = (row g,   cols 2q, 2q+1)
//                                              a1 = (row g+8, cols 2q, 2q+1)
//                                              a2 = (row g,   cols 2q+8, 2q+9)
//                                              a3 = (row g+8, cols 2q+8, 2q+9)
//   B (16 x 8, "col"),      2 x b32 = 4 bf16:  b0 = (rows 2q, 2q+1 of k; col g)
//                                              b1 = (rows 2q+8, 2q+9 of k; col g)
//   C/D (16 x 8, fp32),     4 floats:          c0, c1 = (row g,   cols 2q, 2q+1)
//                                              c2, c3 = (row g+8, cols 2q, 2q+1)
// The lower half of a b32 register holds the element with the smaller column (or k) index.
//
// Hence a C fragment pair becomes an A fragment without any data movement: for a 16-row strip
// S[16][n] held as n/8 C tiles s[j][4], the A fragment of k-step kk (columns 16kk..16kk+15) is
//   { pack(s[2kk][0], s[2kk][1]), pack(s[2kk][2], s[2kk][3]),
//     pack(s[2kk+1][0], s[2kk+1][1]), pack(s[2kk+1][2], s[2kk+1][3]) }   (a_frag_from_c).
//
// ldmatrix.m8n8.x4: lanes 8i..8i+7 give the row addresses of 8x8 matrix i (16 bytes per row);
// register i receives matrix i's (row g, cols 2q, 2q+1), or with .trans its (rows 2q, 2q+1; col g).
// From a row-major shared tile X[rows][SROW] (bf16) four address patterns are used:
//   A pattern (ldsm_a): rows r0 + (l & 15), col c0 + (l >> 4) * 8, no trans
//       -> the A fragment of X[r0..r0+15][c0..c0+15].
//   "N-major B" (ldsm_bn): rows r0 + (l & 7) + (l >> 4) * 8, col c0 + ((l >> 3) & 1) * 8, no trans
//       -> B fragments of B[k][n] = X[n][k] for k in c0..c0+15 and two n-tiles: regs 0,1 for
//          n = r0..r0+7 and regs 2,3 for n = r0+8..r0+15 (X holds B transposed: K for q k^T).
//   "K-major B" (ldsm_bk): rows r0 + (l & 15), col c0 + (l >> 4) * 8, with .trans
//       -> B fragments of B[k][n] = X[k][n] for k in r0..r0+15 and two n-tiles: regs 0,1 for
//          n = c0..c0+7 and regs 2,3 for n = c0+8..c0+15 (X holds B itself: V for p v).
//   "transposed A" (ldsm_at): the N-major B addresses with .trans
//       -> the A fragment of X^T[c0..c0+15][r0..r0+15] (X holds A transposed: P[q][k] for P^T dO).
//
// Shared tiles: rows of SROW = HDP + 8 bf16 (HDP = the head dim padded to 64 or 128): the 16-byte
// pad makes 8 consecutive rows start 4 banks apart, so every ldmatrix phase (8 rows x 16 bytes)
// and every 16-byte cp.async phase is free of bank conflicts. Each row starts 16-byte aligned
// (SROW * 2 = 144 or 272 bytes) as ldmatrix and cp.async require. The backward's P and dS tiles
// (bf16, 64 or 128 keys a row) use the same + 8 padding for the same reasons.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>

#include "ops/cuda/common.cuh"

namespace quest::cuda::attn {

// The asynchronous copies, ex2 and log2(e) are the ops' shared ones (common.cuh).
using detail::cp_async16;
using detail::cp_async4;
using detail::cp_async_commit;
using detail::cp_async_wait;
using detail::ex2;
using detail::kLog2e;
using detail::smem_addr;

template <int HDP>
struct Tile {
  static_assert(HDP % 16 == 0 && HDP <= 128, "padded head dim");
  static constexpr int kSrow = HDP + 8;   // bf16 per shared row
  static constexpr int kChunks = HDP / 8;  // 16-byte chunks per row
};

__device__ __forceinline__ void ldsm_x4(uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3,
                                        uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(addr)
               : "memory");
}
__device__ __forceinline__ void ldsm_x4_trans(uint32_t& r0, uint32_t& r1, uint32_t& r2,
                                              uint32_t& r3, uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(addr)
               : "memory");
}

// d += a * b (16x8x16, bf16 inputs, fp32 accumulators).
__device__ __forceinline__ void mma16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}


// Two floats -> bf16x2 (round to nearest even), `lo` in the lower half.
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  uint32_t u;
  memcpy(&u, &v, sizeof(u));  // (a register move; no type-punning through pointers)
  return u;
}

// The A fragment of k-step kk from a strip of C tiles (see the header comment).
__device__ __forceinline__ void a_frag_from_c(uint32_t (&a)[4], const float (&c0)[4],
                                              const float (&c1)[4]) {
  a[0] = pack_bf16(c0[0], c0[1]);
  a[1] = pack_bf16(c0[2], c0[3]);
  a[2] = pack_bf16(c1[0], c1[1]);
  a[3] = pack_bf16(c1[2], c1[3]);
}

// Address patterns (see the header comment). Each lane's part of an address is computed once
// (lane_a: the A and K-major B patterns; lane_n: the N-major B and transposed-A patterns) and
// added to the tile's shared address: `base` = smem_addr(tile) + lane_a or lane_n. The block's
// corner (r0, c0) is then a constant byte offset once loops are unrolled, which the compiler
// folds into the instruction instead of keeping an address register per fragment.
template <int SROW>
__device__ __forceinline__ uint32_t lane_a(int lane) {
  return uint32_t(((lane & 15) * SROW + (lane >> 4) * 8) * 2);
}
template <int SROW>
__device__ __forceinline__ uint32_t lane_n(int lane) {
  return uint32_t((((lane & 7) + ((lane >> 4) << 3)) * SROW + ((lane >> 3) & 1) * 8) * 2);
}
template <int SROW>
__device__ __forceinline__ uint32_t tile_off(int r0, int c0) {
  return uint32_t((r0 * SROW + c0) * 2);
}
template <int SROW>  // base: lane_a
__device__ __forceinline__ void ldsm_a(uint32_t (&a)[4], uint32_t base, int r0, int c0) {
  ldsm_x4(a[0], a[1], a[2], a[3], base + tile_off<SROW>(r0, c0));
}
template <int SROW>  // base: lane_n
__device__ __forceinline__ void ldsm_bn(uint32_t (&b)[4], uint32_t base, int r0, int c0) {
  ldsm_x4(b[0], b[1], b[2], b[3], base + tile_off<SROW>(r0, c0));
}
template <int SROW>  // base: lane_n
__device__ __forceinline__ void ldsm_at(uint32_t (&a)[4], uint32_t base, int r0, int c0) {
  ldsm_x4_trans(a[0], a[1], a[2], a[3], base + tile_off<SROW>(r0, c0));
}
template <int SROW>  // base: lane_a
__device__ __forceinline__ void ldsm_bk(uint32_t (&b)[4], uint32_t base, int r0, int c0) {
  ldsm_x4_trans(b[0], b[1], b[2], b[3], base + tile_off<SROW>(r0, c0));
}

// Issues the cp.async copies of ROWS rows x HDP columns: global rows row0..row0+ROWS-1 of `g`
// (row stride ld elements; `g` points at row 0, column 0 of this head) -> shared `s` (stride
// SROW). Rows >= T and 16-byte chunks at or past hd_chunks (head dims below HDP) are zero-filled.
// All NT threads of the block must call it (each issues ROWS * kChunks / NT copies).
template <int ROWS, int HDP, int NT>
__device__ __forceinline__ void load_tile(__nv_bfloat16* s, const __nv_bfloat16* g, int64_t ld,
                                          int row0, int T, int hd_chunks) {
  constexpr int kChunks = Tile<HDP>::kChunks, kSrow = Tile<HDP>::kSrow;
  static_assert(NT % kChunks == 0 && ROWS % (NT / kChunks) == 0, "tile copies divide evenly");
  constexpr int kRowStep = NT / kChunks;  // rows covered by one pass of all threads
  const int r = threadIdx.x / kChunks, c = threadIdx.x % kChunks;
  uint32_t dst = smem_addr(s + r * kSrow + c * 8);
  const __nv_bfloat16* src = g + int64_t(row0 + r) * ld + c * 8;
  // Not unrolled: the kernels' main loops call this with registers to spare only for one
  // address pair, not for ROWS * kChunks / NT hoisted ones. (src runs past the tensor on rows
  // >= T; it is never read there: `g` goes to the zero-filling copy instead.)
#pragma unroll 1
  for (int rr = row0 + r; rr < row0 + ROWS; rr += kRowStep) {
    const bool valid = rr < T && c < hd_chunks;
    cp_async16(dst, valid ? src : g, valid);
    dst += kRowStep * kSrow * 2;
    src += kRowStep * ld;
  }
}

// Plain 16-byte stores of a shared tile (stride SROW) to global rows row0.. (< T) of `g`,
// columns < 8 * hd_chunks. Called by all NT threads of the block after a __syncthreads.
template <int ROWS, int HDP, int NT>
__device__ __forceinline__ void store_tile(__nv_bfloat16* g, int64_t ld, int row0, int T,
                                           int hd_chunks, const __nv_bfloat16* s) {
  constexpr int kChunks = Tile<HDP>::kChunks, kSrow = Tile<HDP>::kSrow;
  static_assert(ROWS * kChunks % NT == 0, "tile copies divide evenly");
#pragma unroll
  for (int k = 0; k < ROWS * kChunks / NT; ++k) {
    const int i = k * NT + threadIdx.x;
    const int r = i / kChunks, c = i % kChunks;
    if (row0 + r < T && c < hd_chunks)
      *reinterpret_cast<int4*>(g + int64_t(row0 + r) * ld + c * 8) =
          *reinterpret_cast<const int4*>(s + r * kSrow + c * 8);
  }
}

// Writes a warp's 16-row strip of NTL fp32 C tiles (columns c0 .. c0 + 8 NTL - 1), times `mul`,
// as bf16 into rows r0..r0+15 of the shared tile s (row stride SROW bf16).
template <int SROW, int NTL>
__device__ __forceinline__ void stage_frags(__nv_bfloat16* s, int r0, int c0,
                                            const float (&acc)[NTL][4], float mul0, float mul1,
                                            int lane) {
  const int g = lane >> 2, q = lane & 3;
#pragma unroll
  for (int dt = 0; dt < NTL; ++dt) {
    *reinterpret_cast<uint32_t*>(s + (r0 + g) * SROW + c0 + dt * 8 + 2 * q) =
        pack_bf16(acc[dt][0] * mul0, acc[dt][1] * mul0);
    *reinterpret_cast<uint32_t*>(s + (r0 + g + 8) * SROW + c0 + dt * 8 + 2 * q) =
        pack_bf16(acc[dt][2] * mul1, acc[dt][3] * mul1);
  }
}

// The backward's prologue D = rowsum(dO . O): acc + the dot product of 8 bf16 pairs (two 16-byte
// vectors, element order, one fmaf each). Both backward kernels sum a row's half this way, so
// their D (and Dsum) are the same bits.
__device__ __forceinline__ float dot8_bf16(const void* a, const void* o, float acc) {
  const int4 av = *reinterpret_cast<const int4*>(a);
  const int4 ov = *reinterpret_cast<const int4*>(o);
  __nv_bfloat162 a2[4], o2[4];
  memcpy(a2, &av, sizeof(a2));
  memcpy(o2, &ov, sizeof(o2));
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const float2 fa = __bfloat1622float2(a2[k]), fo = __bfloat1622float2(o2[k]);
    acc = fmaf(fa.x, fo.x, acc);
    acc = fmaf(fa.y, fo.y, acc);
  }
  return acc;
}

// Thread pair (2r, 2r + 1) has summed the two halves of row r: adds them and lets the first of the
// pair publish D (shared sD[r]; Dsum, the [B * H, T] output, for rows inside T).
__device__ __forceinline__ void publish_row_d(float acc, bool first, int r, float* sD, float* Dsum,
                                              int64_t bh, int q0, int T) {
  acc += __shfl_xor_sync(0xffffffffu, acc, 1);
  if (first) {
    sD[r] = acc;
    if (q0 + r < T) Dsum[bh * T + q0 + r] = acc;
  }
}

// Host side (attention_forward.cu), shared by both directions: the shape and head_dim checks
// (quest::Error naming `op`).
void check_attention_args(const char* op, int64_t B, int64_t T, int64_t n_head, int64_t head_dim);

}  // namespace quest::cuda::attn
