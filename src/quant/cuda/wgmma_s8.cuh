#pragma once
// Hopper (sm_90a) int8 wgmma instructions (s8 x s8 -> s32 accumulators), used by the int8 product
// (s8_gemm_sm90.cu) and its roof benchmark (bench/bench_s8_roof.cu). The type-independent
// primitives (descriptors, wgmma fence / commit / wait, fence_operand) are in ops/cuda/hopper.cuh.
// Both operands come from shared memory through K-major 128-byte-swizzle descriptors
// (hopper::desc_kmajor; the k32 step j of a 128-byte row starts 32 j bytes into it). Device code
// only, and only where QUEST_SM90A_DEVICE is 1 (callers guard their kernel bodies with it).
#include "ops/cuda/hopper.cuh"

namespace quest::cuda {
#if QUEST_SM90A_DEVICE

// D[64 x 256] (+)= A[64 x 32] . B[256 x 32]^T, s8 x s8 -> s32 (128 registers a thread).
__device__ __forceinline__ void wgmma_s8_n256(int (&d)[128], uint64_t da, uint64_t db) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %130, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n256k32.s32.s8.s8 {" QUEST_WG_REGS128 "}, %128, %129, p;\n}\n"
      : QUEST_WG_ACC128("+r", d)
      : "l"(da), "l"(db), "n"(1));
}

// D[64 x 128] (+)= A[64 x 32] . B[128 x 32]^T, s8 x s8 -> s32 (64 registers a thread).
__device__ __forceinline__ void wgmma_s8_n128(int (&d)[64], uint64_t da, uint64_t db) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k32.s32.s8.s8 {" QUEST_WG_REGS64 "}, %64, %65, p;\n}\n"
      : QUEST_WG_ACC64("+r", d)
      : "l"(da), "l"(db), "n"(1));
}

template <int BN>
__device__ __forceinline__ void wgmma_s8(int (&d)[BN / 2], uint64_t da, uint64_t db) {
  static_assert(BN == 128 || BN == 256, "int8 wgmma wrappers exist for N = 128 and 256");
  if constexpr (BN == 256)
    wgmma_s8_n256(d, da, db);
  else
    wgmma_s8_n128(d, da, db);
}

#endif  // QUEST_SM90A_DEVICE
}  // namespace quest::cuda
