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
// From a row-major shared tile X[rows][SROW] (bf16) three address patterns are used:
//   A pattern (ldsm_a): rows r0 + (l & 15), col c0 + (l >> 4) * 8, no trans
//       -> the A fragment of X[r0..r0+15][c0..c0+15].
//   "N-major B" (ldsm_bn): rows r0 + (l & 7) + (l >> 4) * 8, col c0 + ((l >> 3) & 1) * 8, no trans
//       -> B fragments of B[k][n] = X[n][k] for k in c0..c0+15 and two n-tiles: regs 0,1 for
//          n = r0..r0+7 and regs 2,3 for n = r0+8..r0+15 (X holds B transposed: K for q k^T).
//   "K-major B" (ldsm_bk): rows r0 + (l & 15), col c0 + (l >> 4) * 8, with .trans
//       -> B fragments of B[k][n] = X[k][n] for k in r0..r0+15 and two n-tiles: regs 0,1 for
//          n = c0..c0+7 and regs 2,3 for n = c0+8..c0+15 (X holds B itself: V for p v).
//
// Shared tiles: rows of SROW = HDP + 8 bf16 (HDP = the head dim padded to 64 or 128): the 16-byte
// pad makes 8 consecutive rows start 4 banks apart, so every ldmatrix phase (8 rows x 16 bytes)
// and every 16-byte cp.async phase is free of bank conflicts. Each row starts 16-byte aligned
// (SROW * 2 = 144 or 272 bytes) as ldmatrix and cp.async require.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>

namespace quest::cuda::attn {

constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;
constexpr float kLog2e = 1.4426950408889634f;

template <int HDP>
struct Tile {
  static_assert(HDP % 16 == 0 && HDP <= 128, "padded head dim");
  static constexpr int kSrow = HDP + 8;   // bf16 per shared row
  static constexpr int kChunks = HDP / 8;  // 16-byte chunks per row
};

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes global -> shared, asynchronous; with valid == false nothing is read and the 16
// bytes are zero-filled (src must still be a valid address; callers pass the tile's base).
__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
               "r"(valid ? 16 : 0)
               : "memory");
}
__device__ __forceinline__ void cp_async4(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(src),
               "r"(valid ? 4 : 0)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
// Waits until at most N of this thread's committed groups are still pending.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

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

// Address patterns (see the header comment); x = tile base, r0/c0 = the 16x16 block's corner.
template <int SROW>
__device__ __forceinline__ void ldsm_a(uint32_t (&a)[4], const __nv_bfloat16* x, int r0, int c0,
                                       int lane) {
  ldsm_x4(a[0], a[1], a[2], a[3], smem_addr(x + (r0 + (lane & 15)) * SROW + c0 + (lane >> 4) * 8));
}
template <int SROW>
__device__ __forceinline__ void ldsm_bn(uint32_t (&b)[4], const __nv_bfloat16* x, int r0, int c0,
                                        int lane) {
  ldsm_x4(b[0], b[1], b[2], b[3],
          smem_addr(x + (r0 + (lane & 7) + ((lane >> 4) << 3)) * SROW + c0 + ((lane >> 3) & 1) * 8));
}
template <int SROW>
__device__ __forceinline__ void ldsm_bk(uint32_t (&b)[4], const __nv_bfloat16* x, int r0, int c0,
                                        int lane) {
  ldsm_x4_trans(b[0], b[1], b[2], b[3],
                smem_addr(x + (r0 + (lane & 15)) * SROW + c0 + (lane >> 4) * 8));
}

// acc[16 x HDP] += P . B for one warp: P is the warp's 16 x BN strip held as fp32 C fragments
// (rounded to bf16 A fragments on the fly), B a BN x HDP bf16 tile in shared memory (row stride
// SROW), read K-major through ldmatrix.trans. Forward: O += P V; backward: dQ += dS K.
template <int BN, int HDP, int SROW>
__device__ __forceinline__ void mma_strip_times_tile(float (&acc)[HDP / 8][4], const float (&p)[BN / 8][4],
                                                     const __nv_bfloat16* b_s, int lane) {
#pragma unroll
  for (int kk = 0; kk < BN / 16; ++kk) {
    uint32_t pa[4];
    a_frag_from_c(pa, p[2 * kk], p[2 * kk + 1]);
#pragma unroll
    for (int dd = 0; dd < HDP / 16; ++dd) {
      uint32_t b[4];
      ldsm_bk<SROW>(b, b_s, kk * 16, dd * 16, lane);
      mma16816(acc[2 * dd], pa, b[0], b[1]);
      mma16816(acc[2 * dd + 1], pa, b[2], b[3]);
    }
  }
}

// Issues the cp.async copies of ROWS rows x HDP columns: global rows row0..row0+ROWS-1 of `g`
// (row stride ld elements; `g` points at row 0, column 0 of this head) -> shared `s` (stride
// SROW). Rows >= T and 16-byte chunks at or past hd_chunks (head dims below HDP) are zero-filled.
// All kThreads threads must call it (each issues ROWS * kChunks / kThreads copies).
template <int ROWS, int HDP>
__device__ __forceinline__ void load_tile(__nv_bfloat16* s, const __nv_bfloat16* g, int64_t ld,
                                          int row0, int T, int hd_chunks) {
  constexpr int kChunks = Tile<HDP>::kChunks, kSrow = Tile<HDP>::kSrow;
  static_assert(ROWS * kChunks % kThreads == 0, "tile copies divide evenly");
#pragma unroll
  for (int k = 0; k < ROWS * kChunks / kThreads; ++k) {
    const int i = k * kThreads + threadIdx.x;
    const int r = i / kChunks, c = i % kChunks;
    const bool valid = row0 + r < T && c < hd_chunks;
    const __nv_bfloat16* src = valid ? g + int64_t(row0 + r) * ld + c * 8 : g;
    cp_async16(smem_addr(s + r * kSrow + c * 8), src, valid);
  }
}

// Plain 16-byte stores of a shared tile (stride SROW) to global rows row0.. (< T) of `g`,
// columns < 8 * hd_chunks. Called by all kThreads threads after a __syncthreads.
template <int ROWS, int HDP>
__device__ __forceinline__ void store_tile(__nv_bfloat16* g, int64_t ld, int row0, int T,
                                           int hd_chunks, const __nv_bfloat16* s) {
  constexpr int kChunks = Tile<HDP>::kChunks, kSrow = Tile<HDP>::kSrow;
  static_assert(ROWS * kChunks % kThreads == 0, "tile copies divide evenly");
#pragma unroll
  for (int k = 0; k < ROWS * kChunks / kThreads; ++k) {
    const int i = k * kThreads + threadIdx.x;
    const int r = i / kChunks, c = i % kChunks;
    if (row0 + r < T && c < hd_chunks)
      *reinterpret_cast<int4*>(g + int64_t(row0 + r) * ld + c * 8) =
          *reinterpret_cast<const int4*>(s + r * kSrow + c * 8);
  }
}

// Writes a warp's 16-row strip of fp32 C tiles acc[HDP/8][4], times `mul`, as bf16 into rows
// r0..r0+15 of the shared tile s (stride SROW).
template <int HDP>
__device__ __forceinline__ void stage_strip(__nv_bfloat16* s, int r0, const float (&acc)[HDP / 8][4],
                                            float mul0, float mul1, int lane) {
  constexpr int kSrow = Tile<HDP>::kSrow;
  const int g = lane >> 2, q = lane & 3;
#pragma unroll
  for (int dt = 0; dt < HDP / 8; ++dt) {
    *reinterpret_cast<uint32_t*>(s + (r0 + g) * kSrow + dt * 8 + 2 * q) =
        pack_bf16(acc[dt][0] * mul0, acc[dt][1] * mul0);
    *reinterpret_cast<uint32_t*>(s + (r0 + g + 8) * kSrow + dt * 8 + 2 * q) =
        pack_bf16(acc[dt][2] * mul1, acc[dt][3] * mul1);
  }
}

// Host side (attention_forward.cu), shared by both directions: the shape and head_dim checks
// (quest::Error naming `op`).
void check_attention_args(const char* op, int64_t B, int64_t T, int64_t n_head, int64_t head_dim);

}  // namespace quest::cuda::attn
