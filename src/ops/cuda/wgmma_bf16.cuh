#pragma once
// Hopper (sm_90a) bf16 wgmma instructions (f32 accumulators) used by the attention kernels
// (attention_forward_sm90.cu, attention_backward_sm90.cu). The type-independent primitives they
// build on (mbarriers, TMA, fences, wgmma fence / commit / wait, fence_operand, the descriptors
// desc_kmajor / desc_nmajor) are in hopper.cuh (namespace quest::cuda::hopper). Device code only;
// include from .cu files.
//
// Availability: everything below exists only when QUEST_WGMMA_BF16 (= QUEST_SM90A_DEVICE) is 1,
// i.e. in the device pass of an sm_90a compilation (__CUDA_ARCH_FEAT_SM90_ALL: wgmma and setmaxnreg need the "a" target).
// Callers guard their kernel bodies with `#if QUEST_WGMMA_BF16`, so sm_80 (and plain sm_90)
// builds compile an empty kernel, and the host checks that the device really runs sm_90a code
// (hopper::sm90a_kernel_available, a probe kernel) before launching it.
//
// Layouts and invariants
// - Shared tiles are written by TMA with CU_TENSOR_MAP_SWIZZLE_128B and a box 64 bf16 (128 bytes)
//   wide: row r of a box occupies bytes [128 r, 128 r + 128) and its 16-byte chunk j is stored at
//   chunk j ^ (r % 8). Every box (and every operand base below) must be 1024-byte aligned, since
//   the hardware applies the swizzle to address bits 4-6 from bits 7-9 and TMA did the same.
//   A 128-wide head dim is two such boxes ("slabs"), each rows x 128 bytes.
// - K-major operand (A of S = Q K^T and B = K: the reduction dim is contiguous), 128-byte swizzle:
//   desc_kmajor(addr): start >> 4, LBO unused (1), SBO = 1024 B (8 rows x 128 B), mode 1 (128 B)
//   in bits 62-63. k16 step kk of a slab starts 32 kk bytes into the row (kk = 0..3); the next 64
//   columns are the next slab.
// - N-major operand (B = V of O += P V: V[key][d] has the N dim, d, contiguous), 128-byte swizzle:
//   desc_nmajor(addr, lbo): canonical ((8 x 16 B, n), (8 rows, k)) : ((16 B, LBO), (128 B, SBO))
//   with LBO = the byte distance between 64-column slabs and SBO = 1024 B (the next 8 rows of the
//   reduction dim). k16 step kk (keys 16 kk .. 16 kk + 15) starts at + 2048 kk bytes. wgmma is told
//   with imm-trans-b = 1.
// - Register fragments (per warpgroup: warp w holds rows 16 w .. 16 w + 15; lane l, g = l / 4,
//   q = l % 4):
//   accumulator D of m64nN (fp32): d[4 j + 0, 1] = (row 16 w + g,     cols 8 j + 2 q, + 1)
//                                  d[4 j + 2, 3] = (row 16 w + g + 8, cols 8 j + 2 q, + 1)
//   A of m64nNk16 from registers (bf16x2, lower half = lower column), k16 step kk:
//     a[0] = (row g, cols 2q, 2q+1), a[1] = (row g+8, same), a[2] = (row g, cols 2q+8, 2q+9),
//     a[3] = (row g+8, same)     (columns relative to 16 kk; rows relative to 16 w)
//   so the accumulator of S becomes the A operand of P V with no data movement:
//     a = {pack(d[8kk], d[8kk+1]), pack(d[8kk+2], d[8kk+3]), pack(d[8kk+4], d[8kk+5]),
//          pack(d[8kk+6], d[8kk+7])}.
// - Ordering rules the callers follow: wgmma_fence() before the first wgmma of a batch whenever
//   the accumulators or A registers were touched by ordinary instructions; commit() after the
//   batch; wait<N>() before reading its results; fence_operand() on the accumulators before the
//   batch and after the wait, so that the compiler neither moves ordinary accesses across them
//   nor copies the registers while the tensor cores own them. Shared memory written by ordinary
//   stores and read by TMA next needs fence_proxy_async() in each writing thread before the
//   barrier that precedes the TMA instruction.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "ops/cuda/hopper.cuh"

#define QUEST_WGMMA_BF16 QUEST_SM90A_DEVICE

namespace quest::cuda::wg {

#if QUEST_WGMMA_BF16
// D[64 x 128] (+)= A[64 x 16] . B[128 x 16]^T; A and B K-major in shared memory (descriptors).
// scale_d == 0: D = A . B (the old D is ignored).
__device__ __forceinline__ void wgmma_ss_m64n128k16(float (&d)[64], uint64_t desc_a, uint64_t desc_b,
                                                    int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {" QUEST_WG_REGS64
      "}, %64, %65, p, 1, 1, 0, 0;\n}\n"
      : QUEST_WG_ACC64("+f", d)
      : "l"(desc_a), "l"(desc_b), "r"(scale_d));
}

// D[64 x 128] (+)= A[64 x 16] . B[16 x 128]; A from registers (the m16n8k16-style fragment of the
// header comment), B N-major ("transposed") in shared memory.
__device__ __forceinline__ void wgmma_rs_m64n128k16_nmajor(float (&d)[64], const uint32_t (&a)[4],
                                                           uint64_t desc_b, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {" QUEST_WG_REGS64
      "}, {%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"
      : QUEST_WG_ACC64("+f", d)
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(scale_d));
}

// D[64 x 128] += A[64 x 16] B[16 x 128]: A in registers (4 x bf16x2, the m64k16 A fragment), B
// MN-major in shared memory (descriptor; imm-trans-b = 1); always accumulates.
__device__ __forceinline__ void wgmma_m64n128_rs_tb(float (&d)[64], const uint32_t (&a)[4], uint64_t db) {
  asm volatile(
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {" QUEST_WG_REGS64
      "}, {%64, %65, %66, %67}, %68, 1, 1, 1, 1;\n"
      : QUEST_WG_ACC64("+f", d)
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db));
}

// D[64 x 64] (+)= A[64 x 16] B[16 x 64]: A and B K-major in shared memory (descriptors).
__device__ __forceinline__ void wgmma_m64n64_ss(float (&d)[32], uint64_t da, uint64_t db, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {" QUEST_WG_REGS32
      "}, %32, %33, p, 1, 1, 0, 0;\n}\n"
      : QUEST_WG_ACC32("+f", d)
      : "l"(da), "l"(db), "r"(accumulate));
}

// D[64 x 64] (+)= A[64 x 16] B[16 x 64]: A in registers, B K-major in shared memory.
__device__ __forceinline__ void wgmma_m64n64_rs(float (&d)[32], const uint32_t (&a)[4], uint64_t db, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {" QUEST_WG_REGS32
      "}, {%32, %33, %34, %35}, %36, p, 1, 1, 0;\n}\n"
      : QUEST_WG_ACC32("+f", d)
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(accumulate));
}
#endif  // QUEST_WGMMA_BF16

}  // namespace quest::cuda::wg
