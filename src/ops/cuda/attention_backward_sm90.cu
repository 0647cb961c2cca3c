// Causal attention backward on Hopper (sm_90a), head_dim 128: the algorithm and the two-kernel,
// no-atomics structure of attention_backward.cu (bit-for-bit deterministic), with the products on
// wgmma (attention_backward.cu dispatches here on sm_90; QUEST_ATTN_SM90_BWD=0 turns it off).
//   1. dq kernel, per block of 64 queries (one warpgroup; 128 and two in variant 2): prologue
//      D[t] = sum_d dO[t, d] O[t, d] (fp32, to the scratch for kernel 2); then per key tile of 64:
//      S = Q K^T, dP = dO V^T (wgmma m64n64k16; B = K, V from shared memory, A = Q, dO from
//      shared memory or, variant 3, registers), P = 2^(S scale log2e - lse log2e) (masked),
//      dS = P (dP - D) in registers, dQ += dS K (wgmma m64n128k16, dS as the register A operand,
//      K as an MN-major B from shared memory); dQ = scale dQ at the end.
//   2. dkdv kernel, per block of 64 keys (one warpgroup; 128 and two in variant 2): per query tile
//      of 64: S^T = K Q^T, dP^T = V dO^T (m64n64k16, both operands in shared memory), P^T, dS^T
//      in registers, dV += P^T dO and dK += dS^T Q (m64n128k16, register A, MN-major B);
//      dK = scale dK at the end.
// Every sum runs in a fixed order (no atomics, no split reductions), so results are reproducible
// bit for bit; the summation orders are the mma.sync kernels' (k16 steps in order, tiles of 64
// in order, D in the same order), and on the H100 the results equal theirs bit for bit.
//
// Measured (H100 SXM, 2026-11-24, bench_attention_backward_sm90, median of 40): B = 64, T = 512,
// head_dim 128: 30M (5 heads) 0.406 -> 0.278 ms (1.46x), 200M (10 heads) 0.761 -> 0.519 ms
// (1.47x); T = 1024, B = 32, 10 heads: 1.246 -> 0.838 ms (1.49x). Variant 1: 0.281 / 0.523 ms,
// variant 2: 0.305 / 0.569 ms. At 200M the dK/dV kernel takes 0.29 ms, the dQ kernel 0.23 ms:
// about 335 and 310 TFLOP/s of executed products (recomputation and diagonal tiles counted),
// with some 3.5 TB/s of L2 -> SM traffic (each 64-row block streams the other side's tiles).
// One warpgroup a block with two blocks an SM (registers: 243 dK/dV, 240 dQ of variant 3) beat
// two warpgroups a block with one block an SM: a block's prologue and epilogue overlap the other
// block's products.
//
// Layout invariants
// - Threads: 128 NWG = NWG warpgroups (NWG = 1, or 2 in variant 2); warpgroup w owns rows
//   [64 w, 64 w + 64) of the block (queries in kernel 1, keys in kernel 2). All threads load
//   tiles with cp.async (no producer warp); one __syncthreads per streamed tile separates the
//   stages of the ring (two stages; three in variant 3's dq kernel, see kRegA).
// - Shared tiles (bf16, head dim 128) are stored as two column blocks of 64 (128 bytes a row),
//   each [R rows][128 B] with the 128-byte swizzle (16-byte chunk c of row r at chunk c ^ (r % 8)),
//   every block 1024-byte aligned: element (r, d) of an R-row tile sits at byte
//   (d / 64) R 128 + r 128 + (((d % 64) / 8) ^ (r % 8)) 16 + (d % 8) 2 (sw_off). The same tile
//   serves as a K-major operand (rows = M or N, head dim = K: descriptor SBO 1024, k16 step j at
//   byte (j / 4) R 128 + (j % 4) 32) and as an MN-major B operand (rows = K, head dim = N:
//   LBO = R 128 (the second column block), SBO = 1024 (8 rows), k16 step j at byte 2048 j).
// - wgmma accumulator layout (m64nN, f32): warp v of the warpgroup, lane (g = lane / 4,
//   q = lane % 4) holds rows 16 v + g (d[4 j + 0, 1]) and 16 v + g + 8 (d[4 j + 2, 3]), columns
//   8 j + 2 q + {0, 1}. The register A fragment of k16 step kk is then
//   {pack(d[8kk], d[8kk+1]), pack(d[8kk+2], d[8kk+3]), pack(d[8kk+4], d[8kk+5]),
//   pack(d[8kk+6], d[8kk+7])} (as a_frag_from_c for mma.sync); load_afrags reads the same
//   fragment of a shared tile.
// - Ordering: cp.async writes (generic proxy) are followed by cp.async.wait_group, then
//   fence.proxy.async.shared::cta, then the barrier, before wgmma (async proxy) reads them; a
//   stage is refilled only after every wgmma that read it has completed (wait_group 0 before the
//   next barrier). The epilogue stages the bf16 results in a freed tile (after a barrier) and
//   writes them with 16-byte stores.
// - Masking: P = 0 where key > query (causal) or the query is >= T; tiles whose keys all pass
//   their queries are skipped per warpgroup (uniform branch). Rows past T are zero-filled.
// Device code exists only in the sm_90a compilation (__CUDA_ARCH_FEAT_SM90_ALL); elsewhere the
// kernel bodies are empty and the host never launches them (attention_backward_sm90_available).
#include "ops/cuda/attention_backward_sm90.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <atomic>

#include "ops/cuda/attention_common.cuh"
#include "ops/cuda/common.cuh"
#include "ops/cuda/hopper.cuh"      // fences, wgmma sync, descriptors, sm90a_kernel_available
#include "ops/cuda/wgmma_bf16.cuh"  // the bf16 wgmma shapes

namespace quest::cuda {

// The variant attention_backward uses unless QUEST_ATTN_SM90_BWD names another.
constexpr int kAttnSm90DefaultVariant = 3;

namespace attn_sm90 {

using attn::kLog2e;
constexpr int kHD = 128;

// ---- kernel 1 (dQ) and 2 (dK, dV) shapes ----------------------------------------------------
// NWG warpgroups per block (1: two blocks per SM; 2: one), 64 rows each.
template <int NWG>
struct QCfg {  // 64 NWG queries per block, key tiles of 64
  static constexpr int kThreads = 128 * NWG, kMinBlocks = NWG == 1 ? 2 : 1;
  static constexpr int kQM = 64 * NWG, kKN = 64;
  static constexpr int kQBytes = kQM * kHD * 2, kKVBytes = kKN * kHD * 2;
  // sQ, sdO, 2 stages x (K, V) (O in stage 1 for the prologue), sL, sD; + 1024 for alignment
  static constexpr int kSmem = 2 * kQBytes + 4 * kKVBytes + 2 * kQM * 4 + 1024;
  static_assert(2 * kKVBytes >= kQBytes, "O fits stage 1");
};
template <int NWG>
struct KVCfg {  // 64 NWG keys per block, query tiles of 64
  static constexpr int kThreads = 128 * NWG, kMinBlocks = NWG == 1 ? 2 : 1;
  static constexpr int kKN = 64 * NWG, kQM = 64;
  static constexpr int kKBytes = kKN * kHD * 2, kQBytes = kQM * kHD * 2;
  // sK, sV, 2 stages x (Q, dO), 2 stages x (lse, D); + 1024 for alignment
  static constexpr int kSmem = 2 * kKBytes + 4 * kQBytes + 4 * kQM * 4 + 1024;
};

#if QUEST_SM90A_DEVICE
using namespace ::quest::cuda::hopper;
using namespace ::quest::cuda::wg;

// ---- tiles -----------------------------------------------------------------------------------
// Byte offset of 16-byte chunk c (0..15) of row r in an R-row swizzled tile (see the header).
template <int R>
__device__ __forceinline__ uint32_t sw_off(int r, int c) {
  return uint32_t((c >> 3) * R * 128 + r * 128 + (((c & 7) ^ (r & 7)) << 4));
}
// cp.async of ROWS rows x 128 bf16 (rows row0.. of g, row stride ld elements) into the swizzled
// tile at dst; rows >= T zero-filled. All kThreads threads call it.
template <int ROWS, int kThreads>
__device__ __forceinline__ void load_tile(uint32_t dst, const __nv_bfloat16* g, int64_t ld, int row0,
                                          int T, int tid) {
#pragma unroll
  for (int k = 0; k < ROWS * 16 / kThreads; ++k) {
    const int id = k * kThreads + tid, r = id >> 4, c = id & 15;
    const bool valid = row0 + r < T;
    attn::cp_async16(dst + sw_off<ROWS>(r, c), valid ? g + int64_t(row0 + r) * ld + c * 8 : g, valid);
  }
}
// The register A fragments of a 64 x 64 accumulator (4 k16 steps), as bf16.
__device__ __forceinline__ void a_frags(uint32_t (&a)[4][4], const float (&d)[32]) {
#pragma unroll
  for (int kk = 0; kk < 4; ++kk)
#pragma unroll
    for (int e = 0; e < 4; ++e) a[kk][e] = attn::pack_bf16(d[8 * kk + 2 * e], d[8 * kk + 2 * e + 1]);
}
// The register A fragments (8 k16 steps over the head dim) of rows r0 .. r0 + 63 of an R-row
// swizzled tile at s: lane (g, q) of warp v takes rows r0 + 16 v + g (+ 8), columns 16 ks + 2 q
// (+ 8) (conflict-free: the 8 rows of a phase sit in 8 different chunk columns).
template <int R>
__device__ __forceinline__ void load_afrags(uint32_t (&a)[8][4], const unsigned char* s, int r0, int t) {
  const int r = r0 + 16 * (t >> 5) + ((t & 31) >> 2), q = t & 3;
#pragma unroll
  for (int ks = 0; ks < 8; ++ks)
#pragma unroll
    for (int e = 0; e < 4; ++e)
      a[ks][e] = *reinterpret_cast<const uint32_t*>(s + sw_off<R>(r + 8 * (e & 1), 2 * ks + (e >> 1)) + 4 * q);
}
// A warpgroup's 64 x 128 fp32 accumulator times mul, as bf16, into the swizzled 64-row tile at s
// (16 KB; conflict-free: the 8 rows of a store phase sit in 8 different chunk columns).
__device__ __forceinline__ void stage_acc(unsigned char* s, const float (&d)[64], float mul, int t) {
  const int v = t >> 5, lane = t & 31, r = 16 * v + (lane >> 2), q = lane & 3;
#pragma unroll
  for (int hr = 0; hr < 2; ++hr)
#pragma unroll
    for (int j = 0; j < 16; ++j)
      *reinterpret_cast<uint32_t*>(s + sw_off<64>(r + 8 * hr, j) + 4 * q) =
          attn::pack_bf16(d[4 * j + 2 * hr] * mul, d[4 * j + 2 * hr + 1] * mul);
}
// 16-byte stores of a staged 64-row tile to rows row0.. (< T) of g (row stride ld), by the 128
// threads of a warpgroup (t = 0..127).
__device__ __forceinline__ void store_staged(__nv_bfloat16* g, int64_t ld, int row0, int T,
                                             const unsigned char* s, int t) {
#pragma unroll
  for (int k = 0; k < 8; ++k) {
    const int id = k * 128 + t, r = id >> 4, c = id & 15;
    if (row0 + r < T)
      *reinterpret_cast<int4*>(g + int64_t(row0 + r) * ld + c * 8) =
          *reinterpret_cast<const int4*>(s + sw_off<64>(r, c));
  }
}
#endif  // QUEST_SM90A_DEVICE

// ---- 1. D and dQ -----------------------------------------------------------------------------
// Grid B * n_head * n_qt (n_qt = ceil(T / QM), QM = 64 NWG); block x: (batch, head)
// bh = x / n_qt, query tile qt = n_qt - 1 - x % n_qt, q0 = QM qt (longest first; the tiles of a
// head run together and share K, V through L2). Warpgroup w: queries q0 + 64 w ..; key tiles
// j = 0 .. min(ceil((q0 + QM) / 64), ceil(T / 64)) - 1 stream through the ring; a warpgroup skips
// a tile whose keys all pass its queries.
// kRegA (NWG 1 only): Q and dO stay in registers as the A operands of S and dP after the
// prologue (halving the shared-memory reads of those products), and their 32 KB joins the ring as
// a third stage (tile j in region (1 - j) mod 3 of [Q, dO | stage | stage]; prefetch distance 2).
template <int NWG, bool kRegA>
__global__ void __launch_bounds__(QCfg<NWG>::kThreads, QCfg<NWG>::kMinBlocks) attn_bwd_dq_sm90(
    __nv_bfloat16* __restrict__ dqkv, float* __restrict__ Dsum, const __nv_bfloat16* __restrict__ dout,
    const __nv_bfloat16* __restrict__ out, const __nv_bfloat16* __restrict__ qkv,
    const float* __restrict__ lse, int T, int n_head, float scale, float scale_log2) {
#if QUEST_SM90A_DEVICE
  using C = QCfg<NWG>;
  static_assert(!kRegA || NWG == 1, "the three-region ring assumes 64-row blocks");
  extern __shared__ unsigned char smem_raw[];
  const uint32_t base = (attn::smem_addr(smem_raw) + 1023u) & ~1023u;
  unsigned char* base_ptr = smem_raw + (base - attn::smem_addr(smem_raw));
  const uint32_t sQ = base, sdO = sQ + C::kQBytes, sKV = sdO + C::kQBytes;  // sKV: [2][K, V]
  float* sL = reinterpret_cast<float*>(base_ptr + 2 * C::kQBytes + 4 * C::kKVBytes);  // [128]
  float* sD = sL + C::kQM;                                                             // [128]

  const int n_qt = (T + C::kQM - 1) / C::kQM;
  const int bh = int(blockIdx.x) / n_qt, b = bh / n_head, h = bh % n_head;
  const int qt = n_qt - 1 - int(blockIdx.x) % n_qt, q0 = qt * C::kQM;
  const int n_kt = min((q0 + C::kQM + C::kKN - 1) / C::kKN, (T + C::kKN - 1) / C::kKN);
  const int64_t Cd = int64_t(n_head) * kHD, ld = 3 * Cd;
  const __nv_bfloat16* gq = qkv + int64_t(b) * T * ld + int64_t(h) * kHD;
  const __nv_bfloat16* gk = gq + Cd;
  const __nv_bfloat16* gv = gq + 2 * Cd;
  const int64_t orow = int64_t(b) * T * Cd + int64_t(h) * kHD;
  const int tid = threadIdx.x, wg = tid >> 7, t = tid & 127, v = t >> 5, lane = t & 31;
  const int qw0 = q0 + 64 * wg;  // this warpgroup's first query

  load_tile<C::kQM, C::kThreads>(sQ, gq, ld, q0, T, tid);
  load_tile<C::kQM, C::kThreads>(sdO, dout + orow, Cd, q0, T, tid);
  load_tile<C::kQM, C::kThreads>(sKV + 2 * C::kKVBytes, out + orow, Cd, q0, T, tid);  // O -> stage 1
  load_tile<C::kKN, C::kThreads>(sKV, gk, ld, 0, T, tid);
  load_tile<C::kKN, C::kThreads>(sKV + C::kKVBytes, gv, ld, 0, T, tid);
  attn::cp_async_commit();
  if (tid < C::kQM) {  // lse in log2 units; +inf past T (P = 0 there)
    const int q = q0 + tid;
    sL[tid] = q < T ? lse[int64_t(bh) * T + q] * kLog2e : INFINITY;
  }
  attn::cp_async_wait<0>();
  __syncthreads();
  {  // D: thread pair (2r, 2r + 1) sums row r, one column block each (zero past T).
    const int r = tid >> 1, cb = tid & 1;
    const unsigned char* a = base_ptr + C::kQBytes + cb * C::kQM * 128 + r * 128;
    const unsigned char* o = base_ptr + 2 * C::kQBytes + 2 * C::kKVBytes + cb * C::kQM * 128 + r * 128;
    float acc = 0.f;
#pragma unroll
    for (int c = 0; c < 8; ++c) {
      const int pc = (c ^ (r & 7)) * 16;  // the 128-byte swizzle of the staged tiles
      acc = attn::dot8_bf16(a + pc, o + pc, acc);
    }
    attn::publish_row_d(acc, cb == 0, r, sD, Dsum, int64_t(bh), q0, T);
  }
  __syncthreads();  // sD, sL published; stage 1 (O) free
  uint32_t qf[kRegA ? 8 : 1][4], of[kRegA ? 8 : 1][4];
  if constexpr (kRegA) {
    load_afrags<C::kQM>(qf, base_ptr, 0, t);
    load_afrags<C::kQM>(of, base_ptr + C::kQBytes, 0, t);
    __syncthreads();  // every thread has its fragments: region 0 is free
    if (1 < n_kt) {
      load_tile<C::kKN, C::kThreads>(base, gk, ld, C::kKN, T, tid);
      load_tile<C::kKN, C::kThreads>(base + C::kKVBytes, gv, ld, C::kKN, T, tid);
    }
    attn::cp_async_commit();
  }
  // This thread's two rows (queries qw0 + 16 v + g (+ 8)).
  const int rr = 64 * wg + 16 * v + (lane >> 2);
  const float nl0 = sL[rr], nl1 = sL[rr + 8], D0 = sD[rr], D1 = sD[rr + 8];
  const int qrow = q0 + rr;

  float dq[64];
#pragma unroll
  for (int i = 0; i < 64; ++i) dq[i] = 0.f;

  for (int j = 0; j < n_kt; ++j) {
    uint32_t st = sKV + uint32_t(j & 1) * 2 * C::kKVBytes;
    if constexpr (kRegA) {
      st = base + uint32_t(((1 - j) % 3 + 3) % 3) * (2 * C::kKVBytes);
      attn::cp_async_wait<1>();  // tile j (tile j + 1 may still be in flight)
      fence_proxy_async();
      __syncthreads();
      if (j + 2 < n_kt) {  // into tile j - 1's region
        const uint32_t nx = base + uint32_t(((-1 - j) % 3 + 3) % 3) * (2 * C::kKVBytes);
        load_tile<C::kKN, C::kThreads>(nx, gk, ld, (j + 2) * C::kKN, T, tid);
        load_tile<C::kKN, C::kThreads>(nx + C::kKVBytes, gv, ld, (j + 2) * C::kKN, T, tid);
      }
      attn::cp_async_commit();  // always (possibly empty): keeps wait_group 1 exact
    } else if (j > 0) {
      attn::cp_async_wait<0>();
      fence_proxy_async();
      __syncthreads();
    } else {
      fence_proxy_async();
      __syncthreads();
    }
    if (!kRegA && j + 1 < n_kt) {
      const uint32_t nx = sKV + uint32_t((j + 1) & 1) * 2 * C::kKVBytes;
      load_tile<C::kKN, C::kThreads>(nx, gk, ld, (j + 1) * C::kKN, T, tid);
      load_tile<C::kKN, C::kThreads>(nx + C::kKVBytes, gv, ld, (j + 1) * C::kKN, T, tid);
      attn::cp_async_commit();
    }
    const int k0 = j * C::kKN;
    if (k0 > qw0 + 63) continue;  // every key after every query of this warpgroup
    float s[32], dp[32];
    wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < 8; ++ks) {
      const uint64_t kb = desc_kmajor(st + (ks >> 2) * (C::kKN * 128) + (ks & 3) * 32);
      if constexpr (kRegA)
        wgmma_m64n64_rs(s, qf[ks], kb, ks > 0);
      else
        wgmma_m64n64_ss(s, desc_kmajor(sQ + (ks >> 2) * (C::kQM * 128) + wg * 64 * 128 + (ks & 3) * 32),
                        kb, ks > 0);
    }
    wgmma_commit();
#pragma unroll
    for (int ks = 0; ks < 8; ++ks) {
      const uint64_t vb = desc_kmajor(st + C::kKVBytes + (ks >> 2) * (C::kKN * 128) + (ks & 3) * 32);
      if constexpr (kRegA)
        wgmma_m64n64_rs(dp, of[ks], vb, ks > 0);
      else
        wgmma_m64n64_ss(dp, desc_kmajor(sdO + (ks >> 2) * (C::kQM * 128) + wg * 64 * 128 + (ks & 3) * 32),
                        vb, ks > 0);
    }
    wgmma_commit();
    wgmma_wait<1>();
    fence_operand(s);
    const bool mask = k0 + 63 > qw0;
    const int kc = k0 + 2 * (lane & 3);
#pragma unroll
    for (int jj = 0; jj < 8; ++jj)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int hr = e >> 1;
        float p = attn::ex2(fmaf(s[4 * jj + e], scale_log2, -(hr ? nl1 : nl0)));
        if (mask && kc + 8 * jj + (e & 1) > qrow + 8 * hr) p = 0.f;
        s[4 * jj + e] = p;
      }
    wgmma_wait<0>();
    fence_operand(dp);
#pragma unroll
    for (int i = 0; i < 32; ++i) dp[i] = s[i] * (dp[i] - ((i & 2) ? D1 : D0));
    uint32_t da[4][4];
    a_frags(da, dp);
    fence_operand(dq);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < 4; ++kk)
      wgmma_m64n128_rs_tb(dq, da[kk], desc_nmajor(st + kk * 2048, C::kKN * 128));
    wgmma_commit();
    wgmma_wait<0>();
    fence_operand(dq);
  }
  // Every warpgroup is done with sQ (its wgmma have completed): stage dQ there, 16 KB each.
  __syncthreads();
  stage_acc(base_ptr + wg * 16384, dq, scale, t);
  __syncthreads();
  store_staged(dqkv + int64_t(b) * T * ld + int64_t(h) * kHD, ld, qw0, T, base_ptr + wg * 16384, t);
#endif
}

// ---- 2. dK, dV -------------------------------------------------------------------------------
// Grid B * n_head * n_kb (n_kb = ceil(T / KN), KN = 64 NWG); block x: bh = x / n_kb, keys
// k0 = KN (x % n_kb) .. (key block 0, the longest, first). Warpgroup w: keys k0 + 64 w ..; query
// tiles i = k0 / 64 .. ceil(T / 64) - 1 (Q, dO, lse, D) stream through two stages; a warpgroup
// skips a tile whose queries all precede its keys.
template <int NWG>
__global__ void __launch_bounds__(KVCfg<NWG>::kThreads, KVCfg<NWG>::kMinBlocks) attn_bwd_dkdv_sm90(
    __nv_bfloat16* __restrict__ dqkv, const __nv_bfloat16* __restrict__ dout,
    const __nv_bfloat16* __restrict__ qkv, const float* __restrict__ lse,
    const float* __restrict__ Dsum, int T, int n_head, float scale, float scale_log2) {
#if QUEST_SM90A_DEVICE
  using C = KVCfg<NWG>;
  extern __shared__ unsigned char smem_raw[];
  const uint32_t base = (attn::smem_addr(smem_raw) + 1023u) & ~1023u;
  unsigned char* base_ptr = smem_raw + (base - attn::smem_addr(smem_raw));
  const uint32_t sK = base, sV = sK + C::kKBytes, sQD = sV + C::kKBytes;  // sQD: [2][Q, dO]
  float* sL = reinterpret_cast<float*>(base_ptr + 2 * C::kKBytes + 4 * C::kQBytes);  // [2][64]
  float* sD = sL + 2 * C::kQM;                                                        // [2][64]

  const int n_kb = (T + C::kKN - 1) / C::kKN;
  const int bh = int(blockIdx.x) / n_kb, b = bh / n_head, h = bh % n_head;
  const int k0 = int(blockIdx.x) % n_kb * C::kKN;
  const int64_t Cd = int64_t(n_head) * kHD, ld = 3 * Cd;
  const __nv_bfloat16* gq = qkv + int64_t(b) * T * ld + int64_t(h) * kHD;
  const __nv_bfloat16* gdo = dout + int64_t(b) * T * Cd + int64_t(h) * kHD;
  const float* lse_bh = lse + int64_t(bh) * T;
  const float* D_bh = Dsum + int64_t(bh) * T;
  const int tid = threadIdx.x, wg = tid >> 7, t = tid & 127, v = t >> 5, lane = t & 31;
  const int kw0 = k0 + 64 * wg;  // this warpgroup's first key
  const int i_begin = k0 / C::kQM, n_qt = (T + C::kQM - 1) / C::kQM;

  const auto load_queries = [&](int i, int stage) {
    const int q0 = i * C::kQM;
    const uint32_t dst = sQD + uint32_t(stage) * 2 * C::kQBytes;
    load_tile<C::kQM, C::kThreads>(dst, gq, ld, q0, T, tid);
    load_tile<C::kQM, C::kThreads>(dst + C::kQBytes, gdo, Cd, q0, T, tid);
    if (tid < C::kQM) {
      const bool valid = q0 + tid < T;
      attn::cp_async4(attn::smem_addr(sL + stage * C::kQM + tid), valid ? lse_bh + q0 + tid : lse_bh, valid);
    } else if (tid < 2 * C::kQM) {
      const bool valid = q0 + tid - C::kQM < T;
      attn::cp_async4(attn::smem_addr(sD + stage * C::kQM + tid - C::kQM),
                      valid ? D_bh + q0 + tid - C::kQM : D_bh, valid);
    }
  };

  load_tile<C::kKN, C::kThreads>(sK, gq + Cd, ld, k0, T, tid);
  load_queries(i_begin, 0);
  attn::cp_async_commit();
  load_tile<C::kKN, C::kThreads>(sV, gq + 2 * Cd, ld, k0, T, tid);
  attn::cp_async_commit();

  float dk[64], dv[64];
#pragma unroll
  for (int i = 0; i < 64; ++i) dk[i] = dv[i] = 0.f;
  const int krow = kw0 + 16 * v + (lane >> 2);  // this thread's keys: krow, krow + 8

  for (int i = i_begin; i < n_qt; ++i) {
    const int stage = (i - i_begin) & 1;
    attn::cp_async_wait<0>();
    fence_proxy_async();
    __syncthreads();
    if (i + 1 < n_qt) {
      load_queries(i + 1, stage ^ 1);
      attn::cp_async_commit();
    }
    const int q0 = i * C::kQM;
    if (kw0 > q0 + 63) continue;  // every key of this warpgroup after every query of the tile
    const uint32_t sQ = sQD + uint32_t(stage) * 2 * C::kQBytes, sdO = sQ + C::kQBytes;
    const float* l_s = sL + stage * C::kQM;
    const float* d_s = sD + stage * C::kQM;
    float s[32], dp[32];
    wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < 8; ++ks)
      wgmma_m64n64_ss(s, desc_kmajor(sK + (ks >> 2) * (C::kKN * 128) + wg * 64 * 128 + (ks & 3) * 32),
                      desc_kmajor(sQ + (ks >> 2) * (C::kQM * 128) + (ks & 3) * 32), ks > 0);
    wgmma_commit();
#pragma unroll
    for (int ks = 0; ks < 8; ++ks)
      wgmma_m64n64_ss(dp, desc_kmajor(sV + (ks >> 2) * (C::kKN * 128) + wg * 64 * 128 + (ks & 3) * 32),
                      desc_kmajor(sdO + (ks >> 2) * (C::kQM * 128) + (ks & 3) * 32), ks > 0);
    wgmma_commit();
    wgmma_wait<1>();
    fence_operand(s);
    const bool mask = kw0 + 63 > q0 || q0 + 63 >= T;
    const int qc = q0 + 2 * (lane & 3);  // + 8 jj + e1: this thread's queries
#pragma unroll
    for (int jj = 0; jj < 8; ++jj) {
      const float2 l2 = *reinterpret_cast<const float2*>(l_s + 8 * jj + 2 * (lane & 3));
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int e1 = e & 1, hr = e >> 1;
        float p = attn::ex2(fmaf(s[4 * jj + e], scale_log2, -(e1 ? l2.y : l2.x) * kLog2e));
        const int q = qc + 8 * jj + e1;
        if (mask && (krow + 8 * hr > q || q >= T)) p = 0.f;
        s[4 * jj + e] = p;
      }
    }
    uint32_t pa[4][4];
    a_frags(pa, s);
    wgmma_wait<0>();
    fence_operand(dp);
#pragma unroll
    for (int jj = 0; jj < 8; ++jj) {
      const float2 d2 = *reinterpret_cast<const float2*>(d_s + 8 * jj + 2 * (lane & 3));
#pragma unroll
      for (int e = 0; e < 4; ++e)
        dp[4 * jj + e] = s[4 * jj + e] * (dp[4 * jj + e] - ((e & 1) ? d2.y : d2.x));
    }
    uint32_t da[4][4];
    a_frags(da, dp);
    fence_operand(dv);
    fence_operand(dk);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < 4; ++kk)
      wgmma_m64n128_rs_tb(dv, pa[kk], desc_nmajor(sdO + kk * 2048, C::kQM * 128));
#pragma unroll
    for (int kk = 0; kk < 4; ++kk)
      wgmma_m64n128_rs_tb(dk, da[kk], desc_nmajor(sQ + kk * 2048, C::kQM * 128));
    wgmma_commit();
    wgmma_wait<0>();
    fence_operand(dv);
    fence_operand(dk);
  }
  __nv_bfloat16* gdk = dqkv + int64_t(b) * T * ld + int64_t(h) * kHD + Cd;
  // Every warpgroup is done with sK, sV: stage dK and dV there, 16 KB each per warpgroup.
  __syncthreads();
  stage_acc(base_ptr + wg * 16384, dk, scale, t);
  stage_acc(base_ptr + C::kKBytes + wg * 16384, dv, 1.f, t);
  __syncthreads();
  store_staged(gdk, ld, kw0, T, base_ptr + wg * 16384, t);
  store_staged(gdk + Cd, ld, kw0, T, base_ptr + C::kKBytes + wg * 16384, t);
#endif
}

}  // namespace attn_sm90

bool attention_backward_sm90_available() {
  static std::atomic<int> state[hopper::kMaxDevices] = {};
  return hopper::sm90a_kernel_available(
      state, reinterpret_cast<const void*>(attn_sm90::attn_bwd_dkdv_sm90<1>));
}

namespace {
// QUEST_ATTN_SM90_BWD (read once): "0" turns the sm_90a path off; "1" .. "3" pick a variant
// (attention_backward_sm90_config); anything else, or unset, the default.
int env_variant() {
  static const int v = [] {
    const char* e = std::getenv("QUEST_ATTN_SM90_BWD");
    if (!e) return kAttnSm90DefaultVariant;
    if (std::strcmp(e, "0") == 0) return 0;
    for (int k = 1; k <= 3; ++k)
      if (e[0] == char('0' + k) && e[1] == 0) return k;
    return kAttnSm90DefaultVariant;
  }();
  return v;
}
}  // namespace

bool attention_backward_uses_sm90(int64_t head_dim) {
  return env_variant() != 0 && head_dim == 128 && attention_backward_sm90_available();
}

void attention_backward_sm90(bf16* dqkv, const bf16* dout, const bf16* out, const bf16* qkv,
                             const float* lse, int64_t B, int64_t T, int64_t n_head,
                             int64_t head_dim, float* scratch, cudaStream_t stream) {
  const int v = env_variant();
  attention_backward_sm90_config(dqkv, dout, out, qkv, lse, B, T, n_head, head_dim, scratch, stream,
                                 v == 0 ? kAttnSm90DefaultVariant : v, 3);
}

namespace attn_sm90 {
template <int NWG, bool kRegA>
void launch(bf16* dqkv, const bf16* dout, const bf16* out, const bf16* qkv, const float* lse,
            int64_t B, int64_t T, int64_t n_head, int64_t head_dim, float* scratch,
            cudaStream_t stream, int kernels) {
  using QC = QCfg<NWG>;
  using KC = KVCfg<NWG>;
  const double sc = 1.0 / std::sqrt(double(head_dim));
  const float fscale = float(sc), fscale_log2 = float(sc * 1.4426950408889634);
  static std::atomic<uint64_t> attribute_set{0};  // one bit per device
  int dev = 0;
  QUEST_CUDA_CHECK(cudaGetDevice(&dev));
  const uint64_t bit = uint64_t(1) << (dev % 64);
  if (!(attribute_set.load(std::memory_order_acquire) & bit)) {
    QUEST_CUDA_CHECK(cudaFuncSetAttribute(attn_bwd_dq_sm90<NWG, kRegA>,
                                          cudaFuncAttributeMaxDynamicSharedMemorySize, QC::kSmem));
    QUEST_CUDA_CHECK(cudaFuncSetAttribute(attn_bwd_dkdv_sm90<NWG>,
                                          cudaFuncAttributeMaxDynamicSharedMemorySize, KC::kSmem));
    attribute_set.fetch_or(bit, std::memory_order_acq_rel);
  }
  if (kernels & 1) {
    attn_bwd_dq_sm90<NWG, kRegA><<<unsigned(B * n_head * ((T + QC::kQM - 1) / QC::kQM)), QC::kThreads,
                            QC::kSmem, stream>>>(dqkv, scratch, dout, out, qkv, lse, int(T),
                                                 int(n_head), fscale, fscale_log2);
    QUEST_CUDA_CHECK(cudaGetLastError());
  }
  if (kernels & 2) {
    attn_bwd_dkdv_sm90<NWG><<<unsigned(B * n_head * ((T + KC::kKN - 1) / KC::kKN)), KC::kThreads,
                              KC::kSmem, stream>>>(dqkv, dout, qkv, lse, scratch, int(T),
                                                   int(n_head), fscale, fscale_log2);
    QUEST_CUDA_CHECK(cudaGetLastError());
  }
}
}  // namespace attn_sm90

void attention_backward_sm90_config(bf16* dqkv, const bf16* dout, const bf16* out, const bf16* qkv,
                                    const float* lse, int64_t B, int64_t T, int64_t n_head,
                                    int64_t head_dim, float* scratch, cudaStream_t stream,
                                    int variant, int kernels) {
  attn::check_attention_args("attention_backward", B, T, n_head, head_dim);
  QUEST_CUDA_REQUIRE(head_dim == 128, "attention_backward_sm90: head_dim must be 128");
  QUEST_CUDA_REQUIRE(variant >= 1 && variant <= 3, "attention_backward_sm90: variant must be 1 .. 3");
  QUEST_CUDA_REQUIRE(attention_backward_sm90_available(),
                     "attention_backward_sm90: the device is not sm_90 or the binary lacks sm_90a code");
  if (B * T * n_head == 0) return;
  QUEST_CUDA_REQUIRE(dqkv && dout && out && qkv && lse && scratch,
                     "attention_backward: null pointer");
  using detail::aligned;
  using detail::aligned16;
  QUEST_CUDA_REQUIRE(aligned16(dqkv) && aligned16(dout) && aligned16(out) && aligned16(qkv) &&
                         aligned(lse, 4) && aligned(scratch, 4),
                     "attention_backward: dqkv, dout, out and qkv must be 16-byte aligned, lse and "
                     "scratch 4-byte aligned");
  QUEST_CUDA_REQUIRE(B * n_head * ((T + 63) / 64) < (int64_t{1} << 31),
                     "attention_backward: B * n_head * ceil(T / 64) exceeds 2^31 - 1");
  switch (variant) {
    case 1:
      attn_sm90::launch<1, false>(dqkv, dout, out, qkv, lse, B, T, n_head, head_dim, scratch,
                                         stream, kernels);
      break;
    case 2:
      attn_sm90::launch<2, false>(dqkv, dout, out, qkv, lse, B, T, n_head, head_dim, scratch,
                                         stream, kernels);
      break;
    default:
      attn_sm90::launch<1, true>(dqkv, dout, out, qkv, lse, B, T, n_head, head_dim, scratch, stream,
                                 kernels);
      break;
  }
}

}  // namespace quest::cuda
