#pragma once
// Our own Hopper (sm_90a) int8 tensor-core GEMM with the low-bit product's row scales in its
// epilogue and bf16 out: the kInt8 route of LowbitGemm::forward on H100/H200 (lowbit_gemm.h),
// without cuBLASLt's int32 round trip and scaling pass. Design and invariants: s8_gemm_sm90.cu.
//
// Conventions (those of src/ops/cuda_ops.h): device pointers, row-major, asynchronous on `stream`,
// host-side argument checks throwing quest::Error. Allocates nothing; each call encodes two TMA
// descriptors on the host (kernel parameters), so it may be captured into a CUDA graph.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "quant/cuda/offset_codes.h"

namespace quest::cuda {

using bf16 = __nv_bfloat16;

// True when this process's current device can run s8_gemm_sm90: compute capability 9.0 and the
// code it loads for the kernel is sm_90a code (hopper::sm90a_kernel_available's probe; cached
// per device). A build without sm_90a (plain sm_90, or 80 only) compiles the body away and is
// refused here: build for 90a-real (the project's default, with 80-real).
bool s8_gemm_sm90_available();

// True when (N, K, M) and the pointers meet s8_gemm_sm90's requirements (below), so a caller can
// fall back to another route instead of catching the error.
bool s8_gemm_sm90_supports(const bf16* y, const int8_t* xc, const float* sx, const int8_t* wc,
                           const float* sw, int64_t N, int64_t K, int64_t M);

// y[n, m] = bf16((float(acc[n, m]) * (0.25f * sx[n])) * sw[m]), each product rounded to nearest
// fp32 in that order (lowbit_scale_int32's arithmetic, so the bits equal the cuBLASLt route's),
// acc = sum_k xc[n, k] * wc[m, k] exactly in int32.
// xc [N, K], wc [M, K] int8 row-major (both K-major); y [N, M] bf16 row-major; sx [N], sw [M] fp32.
// Requirements (quest::Error otherwise): s8_gemm_sm90_available(); K a positive multiple of 16
// (the tile's K tail is zero-filled by TMA), K <= 133,000 (int32 sums of 7-bit codes);
// M % 8 == 0; N, M < 2^31; xc, wc, y 16-byte aligned and sx, sw 8-byte aligned. N and M need not
// be multiples of the tile.
// Tile (BM x BN) and schedule: kAuto picks by shape (s8_gemm_sm90_tile); the others force one
// (tests, benchmark). k128x256p: persistent grid (one CTA per SM looping over the tiles);
// k128x128pp, k64x256pp: persistent, two consumer warpgroups taking alternate tiles (ping-pong).
enum class S8Sm90Tile : int {
  kAuto = 0,
  k128x256 = 1,
  k128x128 = 2,
  k128x256p = 3,
  k128x128pp = 4,
  k64x256pp = 5
};
// group_rows: the tile order's band height in row tiles (s8_gemm_sm90.cu, TileOrder); 0 = the
// choice of s8_gemm_sm90_group_rows (tests and the benchmark force others; the result's bits do
// not depend on it).
// offsets (not null): xc and wc hold offset codes (offset_codes.h) with these row sums and widths
// (1 .. 7 bits; w_sums 8-byte aligned), and acc above is the sum of the signed codes they stand
// for, so y has the bits of the same product on signed codes.
void s8_gemm_sm90(bf16* y, const int8_t* xc, const float* sx, const int8_t* wc, const float* sw,
                  int64_t N, int64_t K, int64_t M, cudaStream_t stream,
                  S8Sm90Tile tile = S8Sm90Tile::kAuto, int group_rows = 0,
                  const OffsetCodes* offsets = nullptr);
// True when s8_gemm_sm90 takes these offsets (both sums, w_sums 8-byte aligned, 1 .. 7 bits).
bool s8_gemm_sm90_offsets_ok(const OffsetCodes& offsets);

// The band height the default picks for a shape (the benchmark prints it).
int s8_gemm_sm90_group_rows(int64_t N, int64_t K, int64_t M);

// The tile kAuto picks for a shape (the benchmark prints it).
S8Sm90Tile s8_gemm_sm90_tile(int64_t N, int64_t K, int64_t M);
const char* s8_gemm_sm90_tile_name(S8Sm90Tile tile);

}  // namespace quest::cuda
