#pragma once
// Shared pieces of the CUDA ops (src/ops/cuda/*.cu): host-side argument checks, launch checks,
// warp/block reductions and vector accesses (8 bf16 or 8 fp32 values per thread, 16-byte loads).
//
// Host checks throw quest::Error through an ostream message and raise_message (raise.cpp), not
// QUEST_CHECK: core/error.h pulls in fmt 9, which does not compile under nvcc (consteval format
// strings in the front end, constexpr functions in the host pass), so no .cu file includes it.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <sstream>
#include <string>

#include "ops/cuda_ops.h"

namespace quest::cuda::detail {

// Throws quest::Error(message) (defined in raise.cpp, compiled by the host compiler).
[[noreturn]] void raise_message(const std::string& message);

template <class... Args>
[[noreturn]] void raise(const Args&... args) {
  std::ostringstream s;
  (s << ... << args);
  raise_message(s.str());
}

}  // namespace quest::cuda::detail

// QUEST_CUDA_REQUIRE(cond, "message ", value, ...): throws quest::Error when cond is false.
#define QUEST_CUDA_REQUIRE(cond, ...)                                   \
  do {                                                                  \
    if (!(cond)) ::quest::cuda::detail::raise(__VA_ARGS__);             \
  } while (0)

// After a launch: a bad configuration (grid, shared memory) is reported on the host at once;
// errors of earlier asynchronous work may surface here too.
#define QUEST_CUDA_LAUNCH_CHECK(name) \
  ::quest::cuda::check(cudaGetLastError(), name, __FILE__, __LINE__)

namespace quest::cuda::detail {

constexpr unsigned kFullMask = 0xffffffffu;
constexpr int64_t kMaxGrid = 1 << 20;  // grid-stride loops cover any work beyond this many blocks

inline bool aligned(const void* p, uintptr_t bytes) {
  return (reinterpret_cast<uintptr_t>(p) % bytes) == 0;
}
inline bool aligned16(const void* p) { return aligned(p, 16); }

// Blocks for `items` work items at `per_block` items per block, at least 1, at most kMaxGrid.
inline unsigned grid_for(int64_t items, int64_t per_block) {
  return unsigned(std::clamp<int64_t>((items + per_block - 1) / per_block, 1, kMaxGrid));
}

// ---- reductions ------------------------------------------------------------------------------
struct Sum {
  template <class T>
  __device__ __forceinline__ T operator()(T a, T b) const { return a + b; }
};
struct Max {
  __device__ __forceinline__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

// Butterfly over the 32 lanes: every lane ends with the same bits (each step combines a pair
// symmetrically, and + and fmax are commutative). The whole warp must call it.
template <class T, class Op>
__device__ __forceinline__ T warp_reduce(T v, Op op) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(kFullMask, v, o));
  return v;
}

// All threads of the block call it (blockDim.x a multiple of 32, at most 1024); `shared` holds
// 32 values. Every thread returns the total, combined in a fixed order (deterministic). Ends with
// a barrier, so `shared` may be reused at once.
template <class T, class Op>
__device__ __forceinline__ T block_reduce(T v, Op op, T* shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
  v = warp_reduce(v, op);
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  T r = shared[0];
  for (int w = 1; w < n_warps; ++w) r = op(r, shared[w]);
  __syncthreads();
  return r;
}

// ---- asynchronous copies and the fast exponential ------------------------------------------
constexpr float kLog2e = 1.4426950408889634f;

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

// Asks L2 for the `bytes` (a multiple of 16) at p (16-byte aligned): one instruction for the
// whole span, nothing loaded into the SM. Hopper's bulk prefetch; a no-op on older GPUs.
__device__ __forceinline__ void prefetch_l2(const void* p, uint32_t bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(p), "r"(bytes) : "memory");
#else
  (void)p, (void)bytes;
#endif
}
// Row r (`cols` entries) of a row-major matrix.
template <class T>
__device__ __forceinline__ void prefetch_row_l2(const T* base, int64_t r, int64_t cols) {
  prefetch_l2(base + r * cols, uint32_t(cols * int64_t(sizeof(T))));
}

// 2^x by the special-function unit (MUFU.EX2: 2 ulp; -inf -> +0; results below 2^-126 flush to
// 0, which the softmax-style callers lose in their bf16 outputs anyway).
__device__ __forceinline__ float ex2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// ---- vector accesses: VEC consecutive elements from p (16-byte aligned when VEC = 8) ----------
template <int VEC>
__device__ __forceinline__ void load(const bf16* p, float (&f)[VEC]) {
  if constexpr (VEC == 8) {
    const uint4 raw = *reinterpret_cast<const uint4*>(p);
    const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const float2 t = __bfloat1622float2(h[k]);
      f[2 * k] = t.x, f[2 * k + 1] = t.y;
    }
  } else {
#pragma unroll
    for (int k = 0; k < VEC; ++k) f[k] = __bfloat162float(p[k]);
  }
}

template <int VEC>
__device__ __forceinline__ void store(bf16* p, const float (&f)[VEC]) {
  if constexpr (VEC == 8) {
    uint4 raw;
    __nv_bfloat162* h = reinterpret_cast<__nv_bfloat162*>(&raw);
#pragma unroll
    for (int k = 0; k < 4; ++k) h[k] = __floats2bfloat162_rn(f[2 * k], f[2 * k + 1]);
    *reinterpret_cast<uint4*>(p) = raw;
  } else {
#pragma unroll
    for (int k = 0; k < VEC; ++k) p[k] = __float2bfloat16_rn(f[k]);
  }
}

template <int VEC>
__device__ __forceinline__ void load(const float* p, float (&f)[VEC]) {
  if constexpr (VEC % 4 == 0) {
#pragma unroll
    for (int k = 0; k < VEC; k += 4) {
      const float4 t = *reinterpret_cast<const float4*>(p + k);
      f[k] = t.x, f[k + 1] = t.y, f[k + 2] = t.z, f[k + 3] = t.w;
    }
  } else {
#pragma unroll
    for (int k = 0; k < VEC; ++k) f[k] = p[k];
  }
}

template <int VEC>
__device__ __forceinline__ void store(float* p, const float (&f)[VEC]) {
  if constexpr (VEC % 4 == 0) {
#pragma unroll
    for (int k = 0; k < VEC; k += 4)
      *reinterpret_cast<float4*>(p + k) = make_float4(f[k], f[k + 1], f[k + 2], f[k + 3]);
  } else {
#pragma unroll
    for (int k = 0; k < VEC; ++k) p[k] = f[k];
  }
}

}  // namespace quest::cuda::detail
