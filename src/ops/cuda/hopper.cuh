#pragma once
// Hopper (sm_90a) primitives that do not depend on the element type, shared by the sm_90a kernels
// (attention_forward_sm90.cu, attention_backward_sm90.cu, quant/cuda/s8_gemm_sm90.cu):
// mbarriers, TMA (bulk tensor) loads and stores with their bulk groups, proxy fences, named
// barriers, register reconfiguration, the wgmma synchronization (fence / commit / wait, operand
// fences), the 128-byte-swizzle shared-memory matrix descriptors and the asm operand lists of
// wgmma accumulators. The typed wgmma instructions live with their callers (bf16:
// wgmma_bf16.cuh; s8: quant/cuda/wgmma_s8.cuh). Host side: the cuTensorMapEncodeTiled entry
// point and the "does this device run the sm_90a cubin" check. Include from .cu files.
//
// Availability: the device functions exist only when QUEST_SM90A_DEVICE is 1, i.e. in the device
// pass of an sm_90a compilation (__CUDA_ARCH_FEAT_SM90_ALL: wgmma and setmaxnreg need the "a"
// target). Callers guard their kernel bodies with `#if QUEST_SM90A_DEVICE` (or
// QUEST_WGMMA_BF16, the same), so sm_80 (and plain sm_90) builds compile empty kernels, and the
// host checks with sm90a_kernel_available() (a probe kernel) that the device really runs sm_90a
// code before launching one.
//
// Invariants the callers keep
// - mbarriers live in shared memory, 8-byte aligned, and are addressed by their 32-bit shared
//   address (smem_addr). Thread 0 initializes them, then mbar_init_fence() and a CTA barrier
//   before any other thread uses them. A phase completes once its arrivals and (mbar_expect_tx)
//   transaction bytes are all in; mbar_wait(bar, parity) waits for the phase of that parity
//   (use n of a barrier completes phase n: parity n & 1).
// - TMA boxes land in shared memory at 1024-byte-aligned addresses when the tensor map uses
//   CU_TENSOR_MAP_SWIZZLE_128B (16-byte chunk j of 128-byte row r stored at chunk j ^ (r % 8));
//   loads complete on an mbarrier (complete_tx: the whole box counts, zero-filled parts too);
//   stores join the issuing thread's bulk group: bulk_commit() closes it, bulk_wait_read<N>()
//   waits until at most N committed groups still read shared memory.
// - Shared memory written by ordinary stores (or cp.async) and read next by the async proxy (TMA
//   store, wgmma) needs fence_proxy_async() in each writing thread before the barrier that
//   precedes the reading instruction.
// - wgmma: wgmma_fence() before the first wgmma of a batch whenever its accumulators or A
//   registers were touched by ordinary instructions; wgmma_commit() after the batch;
//   wgmma_wait<N>() before reading results; fence_operand() on the accumulators (and register A
//   operands) before the batch and after the wait, so that the compiler neither moves ordinary
//   accesses across them nor copies the registers while the tensor cores own them.
// - Descriptors (128-byte swizzle, mode 1 in bits 62-63, SBO = 1024 B = 8 rows x 128 B):
//   desc_kmajor(addr): K-major operand (the reduction dim contiguous), LBO unused (1); the k step
//   of 16 bf16 / 32 int8 j of a 64-bf16 / 128-int8 wide slab starts 32 j bytes into the row.
//   desc_nmajor(addr, lbo): MN-major operand, canonical ((8 x 16 B, n), (8 rows, k)) :
//   ((16 B, LBO), (128 B, SBO)) with LBO = the byte distance between 64-column slabs; the k16
//   step kk starts at + 2048 kk bytes; wgmma is told with imm-trans-b = 1.
//   The hardware applies the swizzle to address bits 4-6 from bits 7-9, as TMA did: operand
//   tiles must be 1024-byte aligned.
#include <cuda.h>  // CUtensorMap and its enums (types only: the encoder comes through the runtime)
#include <cudaTypedefs.h>  // PFN_cuTensorMapEncodeTiled_v12000
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>

#include "ops/cuda/common.cuh"  // QUEST_CUDA_REQUIRE, QUEST_CUDA_CHECK

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define QUEST_SM90A_DEVICE 1
#else
#define QUEST_SM90A_DEVICE 0
#endif

// asm register lists of wgmma accumulators: QUEST_WG_REGS<N> is the text "%0, %1, ..., %N-1";
// QUEST_WG_ACC<N>(c, d) the operand list c(d[0]), ..., c(d[N - 1]) with constraint c ("+f" for
// f32, "+r" for s32 accumulators).
#define QUEST_WG_REGS32                                                                          \
  "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, " \
  "%20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
#define QUEST_WG_REGS64                                                                        \
  QUEST_WG_REGS32                                                                              \
  ", %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, " \
  "%50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
#define QUEST_WG_REGS128                                                                          \
  QUEST_WG_REGS64                                                                                 \
  ", %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, "  \
  "%82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, %96, %97, %98, %99, "    \
  "%100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, %112, %113, %114, "    \
  "%115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127"
#define QUEST_WG_ACC8(c, d, o)                                                                  \
  c(d[o]), c(d[o + 1]), c(d[o + 2]), c(d[o + 3]), c(d[o + 4]), c(d[o + 5]), c(d[o + 6]), \
      c(d[o + 7])
#define QUEST_WG_ACC32(c, d) \
  QUEST_WG_ACC8(c, d, 0), QUEST_WG_ACC8(c, d, 8), QUEST_WG_ACC8(c, d, 16), QUEST_WG_ACC8(c, d, 24)
#define QUEST_WG_ACC64(c, d)                                                             \
  QUEST_WG_ACC32(c, d), QUEST_WG_ACC8(c, d, 32), QUEST_WG_ACC8(c, d, 40),                \
      QUEST_WG_ACC8(c, d, 48), QUEST_WG_ACC8(c, d, 56)
#define QUEST_WG_ACC128(c, d)                                                            \
  QUEST_WG_ACC64(c, d), QUEST_WG_ACC8(c, d, 64), QUEST_WG_ACC8(c, d, 72),                \
      QUEST_WG_ACC8(c, d, 80), QUEST_WG_ACC8(c, d, 88), QUEST_WG_ACC8(c, d, 96),         \
      QUEST_WG_ACC8(c, d, 104), QUEST_WG_ACC8(c, d, 112), QUEST_WG_ACC8(c, d, 120)

namespace quest::cuda::hopper {

#if QUEST_SM90A_DEVICE
using detail::smem_addr;  // common.cuh: a pointer's 32-bit shared address

// ---- mbarrier --------------------------------------------------------------------------------
__device__ __forceinline__ void mbar_init(uint32_t bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_init_fence() {
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
}
// Arrives (count 1) and adds `bytes` to the phase's expected transaction count.
__device__ __forceinline__ void mbar_expect_tx(uint32_t bar, uint32_t bytes) {
  asm volatile(
      "{\n.reg .b64 st;\nmbarrier.arrive.expect_tx.shared::cta.b64 st, [%0], %1;\n}\n" ::"r"(bar),
      "r"(bytes)
      : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
  asm volatile("{\n.reg .b64 st;\nmbarrier.arrive.shared::cta.b64 st, [%0];\n}\n" ::"r"(bar)
               : "memory");
}
// Returns once the phase of the given parity has completed.
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
  asm volatile(
      "{\n.reg .pred done;\n"
      "WG_MBAR_WAIT:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra WG_MBAR_WAIT;\n}\n" ::"r"(bar),
      "r"(parity)
      : "memory");
}

// ---- TMA -------------------------------------------------------------------------------------
// 2D box at (c0, c1) (innermost first) of `map` into shared dst, completing on bar.
__device__ __forceinline__ void tma_load_2d(uint32_t dst, const CUtensorMap* map, int c0, int c1,
                                            uint32_t bar) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%2, %3}], [%4];" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(bar)
      : "memory");
}
// 3D box at (c0, c1, c2) (innermost first) of `map` into shared dst, completing on bar.
__device__ __forceinline__ void tma_load_3d(uint32_t dst, const CUtensorMap* map, int c0, int c1,
                                            int c2, uint32_t bar) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%2, %3, %4}], [%5];" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(bar)
      : "memory");
}
// The same with an L2 eviction policy (a createpolicy value, see l2_policy).
__device__ __forceinline__ void tma_load_3d_hint(uint32_t dst, const CUtensorMap* map, int c0,
                                                 int c1, int c2, uint32_t bar, uint64_t policy) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint"
      " [%0], [%1, {%2, %3, %4}], [%5], %6;" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(bar), "l"(policy)
      : "memory");
}
// L2 eviction policies for all of a load's lines: 0 evict_normal, 1 evict_first, 2 evict_last.
__device__ __forceinline__ uint64_t l2_policy(int kind) {
  uint64_t p;
  if (kind == 1)
    asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(p));
  else if (kind == 2)
    asm volatile("createpolicy.fractional.L2::evict_last.b64 %0, 1.0;" : "=l"(p));
  else
    asm volatile("createpolicy.fractional.L2::evict_normal.b64 %0, 1.0;" : "=l"(p));
  return p;
}
// 2D box store from shared src to (c0, c1) of `map` (clipped to the tensor), added to the
// thread's bulk group.
__device__ __forceinline__ void tma_store_2d(const CUtensorMap* map, uint32_t src, int c0, int c1) {
  asm volatile(
      "cp.async.bulk.tensor.2d.global.shared::cta.bulk_group [%0, {%1, %2}], [%3];" ::"l"(
          reinterpret_cast<uint64_t>(map)),
      "r"(c0), "r"(c1), "r"(src)
      : "memory");
}
// 3D box store from shared src (clipped to the tensor), added to the thread's bulk group.
__device__ __forceinline__ void tma_store_3d(const CUtensorMap* map, uint32_t src, int c0, int c1,
                                             int c2) {
  asm volatile(
      "cp.async.bulk.tensor.3d.global.shared::cta.bulk_group [%0, {%1, %2, %3}], [%4];" ::"l"(
          reinterpret_cast<uint64_t>(map)),
      "r"(c0), "r"(c1), "r"(c2), "r"(src)
      : "memory");
}
__device__ __forceinline__ void bulk_commit() {
  asm volatile("cp.async.bulk.commit_group;" ::: "memory");
}
// Waits until at most kPending of this thread's committed bulk groups still read shared memory.
template <int kPending>
__device__ __forceinline__ void bulk_wait_read() {
  asm volatile("cp.async.bulk.wait_group.read %0;" ::"n"(kPending) : "memory");
}

// ---- fences, barriers, registers -------------------------------------------------------------
// Ordinary shared-memory writes -> later reads by the async proxy (TMA store, wgmma).
__device__ __forceinline__ void fence_proxy_async() {
  asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
}
__device__ __forceinline__ void st_shared_b32(uint32_t addr, uint32_t v) {
  asm volatile("st.shared.b32 [%0], %1;" ::"r"(addr), "r"(v) : "memory");
}
__device__ __forceinline__ void st_shared_b32(uint32_t addr, __nv_bfloat162 v) {
  st_shared_b32(addr, *reinterpret_cast<uint32_t*>(&v));
}
// Barrier of the 128 threads of consumer warpgroup c (named barriers 1 and 2; immediates, so
// ptxas reserves only those).
__device__ __forceinline__ void named_barrier_sync(int c) {
  if (c == 0)
    asm volatile("bar.sync 1, 128;" ::: "memory");
  else
    asm volatile("bar.sync 2, 128;" ::: "memory");
}
// Register reconfiguration of the calling warpgroup (producer: dec, consumers: inc).
template <int kRegs>
__device__ __forceinline__ void setmaxnreg_dec() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" ::"n"(kRegs));
}
template <int kRegs>
__device__ __forceinline__ void setmaxnreg_inc() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" ::"n"(kRegs));
}

// ---- descriptors -----------------------------------------------------------------------------
__device__ __forceinline__ uint64_t desc_kmajor(uint32_t addr) {
  return uint64_t((addr & 0x3FFFF) >> 4) | (uint64_t(1) << 16) | (uint64_t(1024 >> 4) << 32) |
         (uint64_t(1) << 62);
}
__device__ __forceinline__ uint64_t desc_nmajor(uint32_t addr, uint32_t lbo) {
  return uint64_t((addr & 0x3FFFF) >> 4) | (uint64_t((lbo >> 4) & 0x3FFF) << 16) |
         (uint64_t(1024 >> 4) << 32) | (uint64_t(1) << 62);
}

// ---- wgmma synchronization -------------------------------------------------------------------
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
}
template <int kPending>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(kPending) : "memory");
}
template <int N>
__device__ __forceinline__ void fence_operand(float (&d)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(d[i])::"memory");
}
template <int N>
__device__ __forceinline__ void fence_operand(uint32_t (&d)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+r"(d[i])::"memory");
}
template <int N>
__device__ __forceinline__ void fence_operand(int (&d)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+r"(d[i])::"memory");
}
#endif  // QUEST_SM90A_DEVICE

// ---- host ------------------------------------------------------------------------------------
constexpr int kMaxDevices = 64;  // per-device caches below index dev % kMaxDevices or skip

// cuTensorMapEncodeTiled through the runtime's driver entry point (no -lcuda), looked up once.
inline PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
  static PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult q{};
    QUEST_CUDA_CHECK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000,
                                                      cudaEnableDefault, &q));
    QUEST_CUDA_REQUIRE(q == cudaDriverEntryPointSuccess && p != nullptr,
                       "the driver has no cuTensorMapEncodeTiled");
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(p);
  }();
  return fn;
}

// Writes 1 where it was compiled in the sm_90a device pass (where the guarded kernel bodies
// exist), else 0. A template, so that every file including this header has its own copy in its
// own fatbin, compiled for the same architectures as that file's kernels.
template <int = 0>
__global__ void sm90a_probe_kernel(int* out) {
#if QUEST_SM90A_DEVICE
  *out = 1;
#else
  *out = 0;
#endif
}

// Whether the current device is compute capability 9.0, `kernel` loads on it, and the code it
// runs is the sm_90a one: a plain sm_90 (non-"a") compilation, an sm_80 fallback or PTX of
// another target compile the kernels' bodies away, which the probe kernel above (same file, same
// targets) tells by running once. The answer is cached per device in `state` (0 unknown, 1 no,
// 2 yes): each caller keeps its own static array. The first call per device synchronizes it.
inline bool sm90a_kernel_available(std::atomic<int> (&state)[kMaxDevices], const void* kernel) {
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= kMaxDevices) return false;
  int v = state[dev].load(std::memory_order_acquire);
  if (v == 0) {
    int major = 0, minor = 0;
    bool ok = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) == cudaSuccess &&
              cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) == cudaSuccess &&
              major == 9 && minor == 0;
    if (ok) {
      cudaFuncAttributes attr{};
      ok = cudaFuncGetAttributes(&attr, kernel) == cudaSuccess;
    }
    if (ok) {
      int* flag = nullptr;
      int got = 0;
      ok = cudaMalloc(&flag, sizeof(int)) == cudaSuccess;
      if (ok) {
        sm90a_probe_kernel<><<<1, 1>>>(flag);
        ok = cudaMemcpy(&got, flag, sizeof(int), cudaMemcpyDeviceToHost) == cudaSuccess && got == 1;
        cudaFree(flag);
      }
    }
    cudaGetLastError();  // clear a failed query's error
    v = ok ? 2 : 1;
    state[dev].store(v, std::memory_order_release);
  }
  return v == 2;
}

}  // namespace quest::cuda::hopper
