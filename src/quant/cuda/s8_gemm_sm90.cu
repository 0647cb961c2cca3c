// Our own Hopper (sm_90a) int8 GEMM with the row scales in the epilogue (s8_gemm_sm90.h):
//   y[n, m] = bf16((float(sum_k xc[n, k] wc[m, k]) * (0.25 sx[n])) * sw[m]).
// Why: cuBLASLt has no IMMA kernel with a bf16 output, so the kInt8 route wrote the int32 sums and
// rescaled them in a second pass; at the training presets (K = 640 .. 3584) that round trip cost
// as much as the product (docs/LOWBIT_GEMM.md). Here the scales are applied to the accumulators
// in registers and only bf16 leaves the SM.
//
// Kernel invariants (s8_gemm_kernel<Cfg>)
// - Tile BM x BN x 128 (BK = 128 int8 = one 128-byte swizzle row). Tiles are numbered in bands
//   of row tiles (TileOrder; neighbours share their x tile in L2, a wave stays on a few tiles of
//   w). CTA b owns tiles b, b + gridDim.x, ... (one tile unless kPersistent, whose grid is one
//   CTA per SM) and writes y[tile rows, tile columns] (clipped to N x M), nothing else.
// - Configurations: 128 x 256, 4 stages, 1 CTA/SM, two consumers of 64 rows (m64n256), plain or
//   persistent; 128 x 128, 3 stages, 2 CTAs/SM, one consumer of 128 rows (two m64n128);
//   ping-pong (persistent, 1 CTA/SM, 4 stages): two consumers that each own whole tiles, 128 x 128
//   (two m64n128) or 64 x 256 (m64n256), consumer c taking the CTA's tiles c, c + 2, ... A stage
//   then holds one consumer's tile and is released by that consumer's 4 warps. The stage ring
//   hands the tiles' k-blocks out in tile order, so the two main loops follow each other and one
//   consumer's epilogue overlaps the other's wgmma. A consumer starts a tile's main loop only
//   after the other has waited on all full barriers of the tile before (mbarriers turn[c]), so no
//   consumer ever waits on a stage barrier more than one phase ahead of its last completed phase
//   (a parity wait would take the phase two back for the one awaited).
// - Warpgroups: 0 is the producer (setmaxnreg.dec; one thread issues the TMA loads),
//   1 .. kConsumers are consumers (setmaxnreg.inc). Consumer c owns rows
//   [c kWgM 64, (c + 1) kWgM 64) of each tile as kWgM wgmma m64nBNk32 accumulators
//   (BN / 2 int32 registers each per thread). The roles are the two branches of one if/else (the
//   register reconfiguration needs it), and after the split no CTA-wide barrier is used.
// - Shared memory: kStages stages, stage s = [A: BM rows x 128 B][B: BN rows x 128 B], each
//   1024-byte aligned and written only by TMA with the 128-byte swizzle (16-byte chunk j of row r
//   stored at chunk j ^ (r % 8)); kPersistent: two slab buffers per consumer; then 2 kStages
//   mbarriers: full[s] (1 arrival + the stage's bytes) and empty[s] (one arrival per consumer
//   warp).
// - Pipeline: g counts the CTA's k-blocks over all its tiles, stage s = g % kStages, round
//   u = g / kStages. Producer: wait empty[s] for round u - 1 (parity (u - 1) & 1; skipped in
//   round 0), arm full[s] with the stage's byte count, issue both loads onto full[s]. TMA fills
//   rows past N or M and columns past K with zeros and counts the whole box in the transaction
//   bytes, so partial tiles need no special case and add 0 to the sums. Consumer: wait full[s]
//   (parity u & 1), fence, 4 k32 steps x kWgM wgmma, commit; then wait_group 1 (the previous
//   k-block's wgmma have finished reading their stage) and release that stage (lane 0 of each
//   consumer warp arrives on its empty barrier); after a tile's last k-block, wait_group 0 and
//   release that stage too. So at most two k-blocks of wgmma are in flight per warpgroup and a
//   stage is never overwritten while read; the persistent producer runs up to kStages k-blocks
//   into the next tile while the consumers write the last one.
// - wgmma operands: K-major with the 128-byte swizzle; descriptor = start address >> 4,
//   LBO 1 (unused for this layout), SBO 1024 B (8 rows x 128 B) >> 4, swizzle mode 1 (128 B) in
//   bits 62-63. The k32 step j of a row advances the start address by 32 j bytes: the hardware
//   applies the swizzle to the address bits as TMA did, which is why the stages are 1024-aligned.
//   The accumulators are only touched by wgmma between the zero fill and wait_group 0 (each is
//   passed through an empty asm before and after, so the compiler keeps them in place).
// - Epilogue (per consumer and tile, after wait_group 0): the s32 accumulator layout of m64nN:
//   warp w of the warpgroup holds rows 16 w + lane / 4 and + 8, register 4 j + {0, 1}
//   (+ {2, 3} for the second row) columns 8 j + 2 (lane % 4) + {0, 1}. The arithmetic is
//   lowbit_scale_kernel's (lowbit_gemm.cu) operation for operation: s = 0.25f * sx[n];
//   v = float(acc) * s; v * sw[m]; bf16 round to nearest even (change both together). The bf16
//   tile goes out in 64-column slabs: a slab is written (st.shared, 128-byte swizzled, so a
//   warp's 4-byte writes hit 32 different banks) into a buffer, then fence.proxy.async, a barrier
//   of the warpgroup's 128 threads (named barrier 1 + c), and one thread issues the TMA store of
//   the slab, which clips rows >= N and columns >= M. Buffers: plain kernels use this consumer's
//   A rows of stage sl for slab sl (BN / 64 <= kStages; every load has landed and only this
//   warpgroup's finished wgmma read them); persistent ones alternate two own buffers, and before
//   writing one the storing thread waits (cp.async.bulk.wait_group.read 1) until the store that
//   last read it is done, then the warpgroup's barrier. Before exiting it waits for all reads.
//   sx / sw are read only where n < N / m < M.
// - Offset codes (kOffset; offset_codes.h): the accumulators hold sums of offset codes; before
//   the scales, each becomes the signed codes' sum 4 acc + row term + column term (uint32,
//   exact). The rows' code sums load with sx, the columns' with sw, and are used only in the
//   slab that needs them (see ColPair).
// - Device code exists only in the sm_90a compilation (__CUDA_ARCH_FEAT_SM90_ALL); elsewhere the
//   kernel body is empty and the host never launches it (s8_gemm_sm90_available()).
#include "quant/cuda/s8_gemm_sm90.h"

#include <algorithm>
#include <atomic>
#include <mutex>

#include "core/error.h"
#include "ops/cuda/device_info.h"  // device_sm_count
#include "ops/cuda/hopper.cuh"  // mbarrier, TMA, fences, wgmma sync, descriptors, host checks
#include "ops/cuda_ops.h"
#include "quant/cuda/offset_codes.h"
#include "quant/cuda/wgmma_s8.cuh"  // wgmma_s8<BN>

namespace quest::cuda {
namespace {

constexpr int kBK = 128;            // bytes of K per stage row (= the swizzle width)
constexpr int kProducerRegs = 40;   // setmaxnreg.dec for the producer warpgroup

template <int BN_, int kWgM_, int kConsumers_, int kStages_, int kMinBlocks_, int kConsumerRegs_,
          bool kPersistent_, bool kPingPong_ = false>
struct Cfg {
  static constexpr int BN = BN_, kWgM = kWgM_, kConsumers = kConsumers_, kStages = kStages_;
  static constexpr int kMinBlocks = kMinBlocks_, kConsumerRegs = kConsumerRegs_;
  // Persistent: one CTA per SM loops over tiles; the producer runs ahead into the next tile while
  // the consumers write the last one, whose slabs then need their own (double) buffers.
  static constexpr bool kPersistent = kPersistent_;
  // Ping-pong (persistent only): each consumer owns whole tiles (64 kWgM rows), the CTA's tiles
  // alternating between them, so one consumer's epilogue runs while the other's wgmma keep the
  // tensor cores busy (short K: the epilogue is not small beside the main loop).
  static constexpr bool kPingPong = kPingPong_;
  static_assert(!kPingPong || kPersistent, "ping-pong is a persistent schedule");
  static constexpr int kRowsPerConsumer = 64 * kWgM;
  static constexpr int BM = kPingPong ? kRowsPerConsumer : kRowsPerConsumer * kConsumers;
  static constexpr int kThreads = 128 * (kConsumers + 1);
  static constexpr int kABytes = BM * kBK, kBBytes = BN * kBK, kStageBytes = kABytes + kBBytes;
  static constexpr int kSlabBytes = 64 * kWgM * 128;  // a consumer's rows x 64 bf16 columns
  static constexpr int kEpiBytes = kPersistent ? kConsumers * 2 * kSlabBytes : 0;
  static constexpr int kSmem = kStages * kStageBytes + kEpiBytes + (2 * kStages + 2) * 8 + 1024;
  static_assert(BN == 128 || BN == 256, "wgmma wrappers exist for N = 128 and 256");
  static_assert(kABytes % 1024 == 0 && kBBytes % 1024 == 0, "stages must stay 1024-aligned");
  static_assert(BN / 64 <= kStages, "the epilogue stages one 64-column slab per stage");
  // Registers: the launch gives each thread 64K / (threads x blocks), rounded down to a multiple
  // of 8; setmaxnreg only moves registers within that allocation, so what the consumers take
  // beyond it the producer must have given back (else setmaxnreg.inc waits forever: seen on the
  // H100 in session 10 with 128 / 192 at 384 threads).
  static constexpr int kLaunchRegs = (65536 / (kThreads * kMinBlocks)) / 8 * 8;
  static_assert(kProducerRegs * 128 + kConsumerRegs * 128 * kConsumers <= kLaunchRegs * kThreads,
                "register reconfiguration exceeds the CTA's launch allocation");
};
// 128 x 256, 4 stages (192 KB), one CTA per SM, two consumer warpgroups of 64 rows each; and its
// persistent form (+ 32 KB of slab buffers).
using CfgL = Cfg<256, 1, 2, 4, 1, 232, false>;
using CfgLP = Cfg<256, 1, 2, 4, 1, 232, true>;
// 128 x 128, 3 stages (96 KB), two CTAs per SM, one consumer warpgroup of 128 rows (two m64).
using CfgS = Cfg<128, 2, 1, 3, 2, 216, false>;
// Ping-pong: two consumers alternating tiles of 128 x 128 (two m64n128 each; 4 stages of 32 KB +
// 64 KB of slabs) or of 64 x 256 (one m64n256; 4 stages of 40 KB + 32 KB of slabs).
using CfgPP128 = Cfg<128, 2, 2, 4, 1, 232, true, true>;
using CfgPP256 = Cfg<256, 1, 2, 4, 1, 232, true, true>;

// The order in which a grid walks its tiles. Tiles are numbered in bands of `group` row tiles
// (the last band may be shorter); inside a band, row tiles fastest, then column tiles. group 1 is
// row tile major (tile i = row tile i / m_tiles, column tile i % m_tiles). Why bands: in row tile
// major order one wave of a wide output (4096 x 11008: 43 column tiles) reads all of w (45 MB)
// for three row tiles of x; a band of 8 row tiles keeps a wave on 8 x 17 tiles (4 MB of x, 17 MB
// of w). Measured, not modelled: the 7B products are 8-15% faster in bands of 8, even 4096 x 4096
// whose w fits L2 either way (s8_gemm_sm90_group_rows).
struct TileOrder {
  int m_tiles, n_tiles, group, tiles;  // column tiles, row tiles, rows per band, m_tiles n_tiles
};

// The offset form's row sums and constants (offset_codes.h), read by kOffset kernels only.
struct OffsetArgs {
  const int32_t* x_sums;
  const int32_t* w_sums;
  uint32_t K, zx, zw;
};

#if QUEST_SM90A_DEVICE  // (device code of the sm_90a pass only: see the kernel's last invariant)
using namespace ::quest::cuda::hopper;

// (row tile, column tile) of tile i in `order`.
__device__ __forceinline__ int2 tile_origin(int i, const TileOrder& order) {
  const int per_band = order.group * order.m_tiles;
  const int band = i / per_band, first = band * order.group, local = i - band * per_band;
  const int rows = min(order.group, order.n_tiles - first);
  return make_int2(first + local % rows, local / rows);
}
#endif

template <class C, bool kOffset>
__global__ void __launch_bounds__(C::kThreads, C::kMinBlocks)
    s8_gemm_kernel(const __grid_constant__ CUtensorMap map_x, const __grid_constant__ CUtensorMap map_w,
                   const __grid_constant__ CUtensorMap map_y, const float* __restrict__ sx,
                   const float* __restrict__ sw, int N, int M, int nk, TileOrder order,
                   OffsetArgs off) {
#if QUEST_SM90A_DEVICE
  extern __shared__ uint8_t smem_raw[];
  const uint32_t base = (smem_addr(smem_raw) + 1023u) & ~1023u;
  const uint32_t epi = base + C::kStages * C::kStageBytes;  // kPersistent: the slab buffers
  const uint32_t bars = epi + C::kEpiBytes;
  auto full = [&](int s) { return bars + 8u * uint32_t(s); };
  auto empty = [&](int s) { return bars + 8u * uint32_t(C::kStages + s); };
  auto turn = [&](int c) { return bars + 8u * uint32_t(2 * C::kStages + c); };  // ping-pong
  const int wg = int(threadIdx.x) / 128, t = int(threadIdx.x) % 128;

  if (threadIdx.x == 0) {
    for (int s = 0; s < C::kStages; ++s) {
      mbar_init(full(s), 1);
      mbar_init(empty(s), 4 * (C::kPingPong ? 1 : C::kConsumers));  // the warps reading a stage
    }
    if (C::kPingPong) mbar_init(turn(0), 4), mbar_init(turn(1), 4);
    mbar_init_fence();
  }
  __syncthreads();

  // Tiles: blockIdx.x, + gridDim.x, ... (one each unless kPersistent), placed by tile_origin.
  // g counts k-blocks over all of this CTA's tiles: stage g % kStages, round g / kStages.
  if (wg == 0) {
    // Producer.
    setmaxnreg_dec<kProducerRegs>();
    if (t == 0) {
      int g = 0;
      for (int tile = int(blockIdx.x); tile < order.tiles; tile += int(gridDim.x)) {
        const int2 o = tile_origin(tile, order);
        const int row0 = o.x * C::BM, col0 = o.y * C::BN;
        for (int kb = 0; kb < nk; ++kb, ++g) {
          const int s = g % C::kStages, u = g / C::kStages;
          if (u > 0) mbar_wait(empty(s), uint32_t(u - 1) & 1u);
          const uint32_t a = base + uint32_t(s) * C::kStageBytes;
          mbar_expect_tx(full(s), C::kStageBytes);
          tma_load_2d(a, &map_x, kb * kBK, row0, full(s));
          tma_load_2d(a + C::kABytes, &map_w, kb * kBK, col0, full(s));
        }
      }
    }
  } else {
    // Consumer c: rows [c kWgM 64, (c + 1) kWgM 64) of each tile; ping-pong: all rows of the
    // CTA's tiles c, c + kConsumers, ... (its j-th tile's k-blocks start at g = j nk).
    setmaxnreg_inc<C::kConsumerRegs>();
    const int c = wg - 1, warp = t / 32, lane = t % 32;
    const int q = lane % 4, r0 = 16 * warp + lane / 4;  // r0 % 8 == lane / 4
    const int first = C::kPingPong ? c : 0, every = C::kPingPong ? C::kConsumers : 1;
    const uint32_t a_rows0 = C::kPingPong ? 0u : uint32_t(c * C::kRowsPerConsumer);
    int g = first * nk, slabs = 0;
    for (int tile = int(blockIdx.x) + first * int(gridDim.x); tile < order.tiles;
         tile += every * int(gridDim.x), g += (every - 1) * nk) {
      const int2 o = tile_origin(tile, order);
      const int row0 = o.x * C::BM, col0 = o.y * C::BN;
      // Ping-pong: wait for the other consumer to have passed the full barriers of its tile
      // before ours (turn[c], one phase per tile; consumer 0's first tile has no predecessor).
      // Without it this consumer could wait on a stage's barrier two phases ahead of where it
      // stands, and a parity wait cannot tell that phase from the one just completed.
      if (C::kPingPong && (c > 0 || g > 0)) {
        const int mine = (g / nk) / C::kConsumers;  // this consumer's tile count so far
        mbar_wait(turn(c), uint32_t(c > 0 ? mine : mine - 1) & 1u);
      }
      int acc[C::kWgM][C::BN / 2];
#pragma unroll
      for (int i = 0; i < C::kWgM; ++i)
#pragma unroll
        for (int r = 0; r < C::BN / 2; ++r) acc[i][r] = 0;
      for (int kb = 0; kb < nk; ++kb, ++g) {
        const int s = g % C::kStages, u = g / C::kStages;
        mbar_wait(full(s), uint32_t(u) & 1u);
        const uint32_t a = base + uint32_t(s) * C::kStageBytes + a_rows0 * kBK;
        const uint32_t b = base + uint32_t(s) * C::kStageBytes + C::kABytes;
#pragma unroll
        for (int i = 0; i < C::kWgM; ++i) fence_operand(acc[i]);
        wgmma_fence();
#pragma unroll
        for (int k = 0; k < kBK / 32; ++k)
#pragma unroll
          for (int i = 0; i < C::kWgM; ++i)
            wgmma_s8<C::BN>(acc[i], desc_kmajor(a + uint32_t(i) * 64u * kBK + 32u * k),
                            desc_kmajor(b + 32u * k));
        wgmma_commit();
#pragma unroll
        for (int i = 0; i < C::kWgM; ++i) fence_operand(acc[i]);
        wgmma_wait<1>();
        // The previous k-block's wgmma have finished reading its stage: release it.
        if (kb > 0 && lane == 0) mbar_arrive(empty((g - 1) % C::kStages));
      }
      // Every warp of this consumer has passed the tile's full barriers: the other's turn.
      if (C::kPingPong && lane == 0) mbar_arrive(turn(1 - c));

      // Cooperative tiles load the epilogue's scales before the last wgmma are waited on, and
      // each slab's column scales one slab ahead: global loads (often a first touch of sx / sw)
      // whose latency otherwise stalls every slab between the barriers around it. H100,
      // bench_lowbit_linear, 2026-11-24: the persistent 128 x 256 tile 6-7% faster at
      // 32768 x 640 -> 1920 and 32768 x 1280 -> 3840 / 3584, 1% at the 200M down projection
      // (0.208 -> 0.205 ms), 0-2% at the 7B shapes. Ping-pong consumers load them in place: the
      // early loads made the 128 x 128 ping-pong 7-11% slower.
      constexpr bool kEarly = !C::kPingPong;
      float s0[C::kWgM], s1[C::kWgM];
      // kOffset: the rows' code sums as loaded, then their terms (offset_row_term) where the
      // epilogue starts (see ColPair below).
      int u0[C::kWgM] = {}, u1[C::kWgM] = {};
      uint32_t t0[C::kWgM] = {}, t1[C::kWgM] = {};
      auto load_s = [&] {
#pragma unroll
        for (int i = 0; i < C::kWgM; ++i) {
          const int n0 = row0 + int(a_rows0) + i * 64 + r0, n1 = n0 + 8;
          s0[i] = n0 < N ? __fmul_rn(0.25f, __ldg(sx + n0)) : 0.f;
          s1[i] = n1 < N ? __fmul_rn(0.25f, __ldg(sx + n1)) : 0.f;
          if constexpr (kOffset) {
            u0[i] = n0 < N ? __ldg(off.x_sums + n0) : 0;
            u1[i] = n1 < N ? __ldg(off.x_sums + n1) : 0;
          }
        }
      };
      // A column pair's scales and (kOffset) code sums, as loaded: nothing may use them before
      // the slab that needs them, or the loads a slab ahead would wait where they are issued
      // (computing the column terms at the load made the 7B products 5-8% slower).
      struct ColPair {
        float2 s;
        int2 u;
      };
      auto load_col = [&](int m) {
        ColPair p{float2{0.f, 0.f}, int2{0, 0}};
        if (m < M) {
          p.s = __ldg(reinterpret_cast<const float2*>(sw + m));
          if constexpr (kOffset) p.u = __ldg(reinterpret_cast<const int2*>(off.w_sums + m));
        }
        return p;
      };
      auto load_w = [&](int sl, ColPair (&w)[8]) {
#pragma unroll
        for (int jj = 0; jj < 8; ++jj) w[jj] = load_col(col0 + 8 * (8 * sl + jj) + 2 * q);
      };
      // The int32 sum of the signed codes an accumulator stands for.
      auto sum_of = [&](int acc, uint32_t row_term, uint32_t col_term) {
        if constexpr (kOffset)
          return offset_sum(acc, row_term + col_term);
        else
          return acc;
      };
      ColPair w_next[8];
      if constexpr (kEarly) load_s(), load_w(0, w_next);

      wgmma_wait<0>();
#pragma unroll
      for (int i = 0; i < C::kWgM; ++i) fence_operand(acc[i]);
      if (lane == 0) mbar_arrive(empty((g - 1) % C::kStages));  // the tile's last stage

      // Epilogue: lowbit_scale_kernel's arithmetic on the accumulators, staged through shared
      // memory in 64-column slabs (the 128-byte swizzle of the y tensor map, which makes these
      // 4-byte writes conflict-free) and written by TMA stores that clip at N and M.
      if constexpr (!kEarly) load_s();
      if constexpr (kOffset) {
#pragma unroll
        for (int i = 0; i < C::kWgM; ++i) {
          t0[i] = offset_row_term(u0[i], off.K, off.zx, off.zw);
          t1[i] = offset_row_term(u1[i], off.K, off.zx, off.zw);
        }
      }
#pragma unroll
      for (int sl = 0; sl < C::BN / 64; ++sl, ++slabs) {
        ColPair w_slab[8];  // kEarly: this slab's column scales (and code sums)
        if constexpr (kEarly) {
#pragma unroll
          for (int jj = 0; jj < 8; ++jj) w_slab[jj] = w_next[jj];
          if (sl + 1 < C::BN / 64) load_w(sl + 1, w_next);
        }
        uint32_t buf;
        if constexpr (C::kPersistent) {
          // Two buffers per consumer, alternating: the store issued from this one two slabs ago
          // must have finished reading it.
          buf = epi + uint32_t(2 * c + (slabs & 1)) * C::kSlabBytes;
          if (t == 0) bulk_wait_read<1>();
          named_barrier_sync(c);
        } else {
          // This consumer's A rows of stage sl (BN / 64 <= kStages): every load has landed and
          // only this warpgroup's finished wgmma read them.
          buf = base + uint32_t(sl) * C::kStageBytes + a_rows0 * kBK;
        }
#pragma unroll
        for (int jj = 0; jj < 8; ++jj) {
          const int j = 8 * sl + jj;
          ColPair p;
          if constexpr (kEarly)
            p = w_slab[jj];
          else
            p = load_col(col0 + 8 * j + 2 * q);
          const float2 w = p.s;
          const uint2 ct = kOffset ? uint2{offset_col_term(p.u.x, off.zx), offset_col_term(p.u.y, off.zx)}
                                   : uint2{0u, 0u};
          const uint32_t sm_off = uint32_t(((jj ^ (lane / 4)) << 4) + 4 * q);
#pragma unroll
          for (int i = 0; i < C::kWgM; ++i) {
            const int* d = acc[i] + 4 * j;
            const float a0 = float(sum_of(d[0], t0[i], ct.x)), a1 = float(sum_of(d[1], t0[i], ct.y));
            const float a2 = float(sum_of(d[2], t1[i], ct.x)), a3 = float(sum_of(d[3], t1[i], ct.y));
            const uint32_t row = uint32_t(64 * i + r0) * kBK;
            st_shared_b32(buf + row + sm_off,
                          __floats2bfloat162_rn(__fmul_rn(__fmul_rn(a0, s0[i]), w.x),
                                                __fmul_rn(__fmul_rn(a1, s0[i]), w.y)));
            st_shared_b32(buf + row + 8 * kBK + sm_off,
                          __floats2bfloat162_rn(__fmul_rn(__fmul_rn(a2, s1[i]), w.x),
                                                __fmul_rn(__fmul_rn(a3, s1[i]), w.y)));
          }
        }
        fence_proxy_async();  // st.shared -> TMA reads
        named_barrier_sync(c);
        if (t == 0) {
          tma_store_2d(&map_y, buf, col0 + 64 * sl, row0 + int(a_rows0));
          bulk_commit();
        }
      }
    }
    // The shared memory must outlive the stores' reads of it.
    if (t == 0) bulk_wait_read<0>();
  }
#endif  // QUEST_SM90A_DEVICE
}

// ---- host ------------------------------------------------------------------------------------
using hopper::kMaxDevices;
using hopper::tensor_map_encoder;

// rows x K int8, row-major; box = 128 bytes of K x box_rows rows, 128-byte swizzle, zero fill.
CUtensorMap encode_map(const int8_t* p, int64_t rows, int64_t K, int box_rows) {
  CUtensorMap map{};
  const cuuint64_t dims[2] = {cuuint64_t(K), cuuint64_t(rows)};
  const cuuint64_t strides[1] = {cuuint64_t(K)};
  const cuuint32_t box[2] = {cuuint32_t(kBK), cuuint32_t(box_rows)};
  const cuuint32_t estrides[2] = {1, 1};
  const CUresult r = tensor_map_encoder()(
      &map, CU_TENSOR_MAP_DATA_TYPE_UINT8, 2, const_cast<int8_t*>(p), dims, strides, box, estrides,
      CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
      CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  QUEST_CHECK(r == CUDA_SUCCESS, "s8_gemm_sm90: cuTensorMapEncodeTiled failed ({}) for {} x {}",
              int(r), rows, K);
  return map;
}

// y: rows x cols bf16, row-major; box = 64 columns (128 bytes) x box_rows, 128-byte swizzle.
CUtensorMap encode_y_map(bf16* p, int64_t rows, int64_t cols, int box_rows) {
  CUtensorMap map{};
  const cuuint64_t dims[2] = {cuuint64_t(cols), cuuint64_t(rows)};
  const cuuint64_t strides[1] = {cuuint64_t(cols) * sizeof(bf16)};
  const cuuint32_t box[2] = {64, cuuint32_t(box_rows)};
  const cuuint32_t estrides[2] = {1, 1};
  const CUresult r = tensor_map_encoder()(
      &map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, p, dims, strides, box, estrides,
      CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_NONE,
      CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  QUEST_CHECK(r == CUDA_SUCCESS, "s8_gemm_sm90: cuTensorMapEncodeTiled failed ({}) for y {} x {}",
              int(r), rows, cols);
  return map;
}

template <class C, bool kOffset>
void launch(bf16* y, const int8_t* xc, const float* sx, const int8_t* wc, const float* sw,
            int64_t N, int64_t K, int64_t M, int group_rows, const OffsetCodes* offsets,
            cudaStream_t stream) {
  static std::atomic<uint64_t> attribute_set{0};  // one bit per device
  int dev = 0;
  QUEST_CUDA_CHECK(cudaGetDevice(&dev));
  const uint64_t bit = uint64_t(1) << (dev % kMaxDevices);
  if (!(attribute_set.load(std::memory_order_acquire) & bit)) {
    QUEST_CUDA_CHECK(cudaFuncSetAttribute(s8_gemm_kernel<C, kOffset>,
                                          cudaFuncAttributeMaxDynamicSharedMemorySize, C::kSmem));
    attribute_set.fetch_or(bit, std::memory_order_acq_rel);
  }
  const CUtensorMap mx = encode_map(xc, N, K, C::BM);
  const CUtensorMap mw = encode_map(wc, M, K, C::BN);
  const CUtensorMap my = encode_y_map(y, N, M, 64 * C::kWgM);
  const int64_t m_tiles = (M + C::BN - 1) / C::BN, n_tiles = (N + C::BM - 1) / C::BM;
  const int64_t tiles = m_tiles * n_tiles;
  QUEST_CHECK(tiles < (int64_t(1) << 31), "s8_gemm_sm90: {} tiles", tiles);
  const int group = int(std::clamp<int64_t>(
      group_rows > 0 ? group_rows : s8_gemm_sm90_group_rows(N, K, M), 1, n_tiles));
  int64_t grid = tiles;
  if constexpr (C::kPersistent) {
    grid = std::min<int64_t>(tiles, int64_t(device_sm_count(dev)) * C::kMinBlocks);
  }
  OffsetArgs off{nullptr, nullptr, uint32_t(K), 0u, 0u};
  if (offsets)
    off = OffsetArgs{offsets->x_sums, offsets->w_sums, uint32_t(K), offset_zero(offsets->x_bits),
                     offset_zero(offsets->w_bits)};
  s8_gemm_kernel<C, kOffset><<<unsigned(grid), C::kThreads, C::kSmem, stream>>>(
      mx, mw, my, sx, sw, int(N), int(M), int((K + kBK - 1) / kBK),
      TileOrder{int(m_tiles), int(n_tiles), group, int(tiles)}, off);
  QUEST_CUDA_CHECK(cudaGetLastError());
}

bool aligned(const void* p, uintptr_t a) { return reinterpret_cast<uintptr_t>(p) % a == 0; }

}  // namespace

bool s8_gemm_sm90_available() {
  static std::atomic<int> state[hopper::kMaxDevices] = {};
  return hopper::sm90a_kernel_available(state,
                                        reinterpret_cast<const void*>(s8_gemm_kernel<CfgL, false>));
}

bool s8_gemm_sm90_supports(const bf16* y, const int8_t* xc, const float* sx, const int8_t* wc,
                           const float* sw, int64_t N, int64_t K, int64_t M) {
  return N >= 0 && M >= 0 && N < (int64_t(1) << 31) && M < (int64_t(1) << 31) && K > 0 &&
         K % 16 == 0 && K <= 133000 && M % 8 == 0 && aligned(xc, 16) && aligned(wc, 16) &&
         aligned(y, 16) && aligned(sx, 8) && aligned(sw, 8);
}

S8Sm90Tile s8_gemm_sm90_tile(int64_t N, int64_t K, int64_t M) {
  // Measured on the H100 (docs/PERF.md, bench_lowbit_linear): with a short main loop (K <= 2048:
  // every 30M and 200M product but the 200M down projection) the 128 x 128 ping-pong is the
  // fastest, 4-16% ahead of the others, as its epilogues hide behind the other consumer's wgmma;
  // with a long one the persistent 128 x 256 (more reuse per loaded byte) wins, except on narrow
  // outputs (M = 640) where 128 x 128 (two CTAs per SM) does. Grids of fewer 128 x 256 tiles than
  // an H100 has SMs take 128 x 128 too (more CTAs to spread; reasoned, not measured).
  const int64_t tiles_l = ((N + 127) / 128) * ((M + 255) / 256);
  if (tiles_l < 132) return S8Sm90Tile::k128x128;
  if (K <= 2048) return S8Sm90Tile::k128x128pp;
  if (M <= 768) return S8Sm90Tile::k128x128;
  return S8Sm90Tile::k128x256p;
}

int s8_gemm_sm90_group_rows(int64_t N, int64_t K, int64_t M) {
  // Measured on the H100 (bench_lowbit_linear, 2026-11-24): with the persistent 128 x 256 tile,
  // bands of 8 row tiles take the 7B products from 0.104 to 0.096 ms (4096 x 4096 -> 4096) and
  // from 0.317 to 0.27-0.28 (-> 11008), and leave 11008 -> 4096 and the 200M down projection as
  // they were; the 128 x 128 tiles of the training presets gain nothing (200M qkv loses 2%).
  return s8_gemm_sm90_tile(N, K, M) == S8Sm90Tile::k128x256p ? 8 : 1;
}

const char* s8_gemm_sm90_tile_name(S8Sm90Tile tile) {
  switch (tile) {
    case S8Sm90Tile::k128x256: return "128x256 (4 stages, 1 CTA/SM)";
    case S8Sm90Tile::k128x128: return "128x128 (3 stages, 2 CTAs/SM)";
    case S8Sm90Tile::k128x256p: return "128x256 persistent (4 stages + slab buffers, 1 CTA/SM)";
    case S8Sm90Tile::k128x128pp: return "128x128 ping-pong (persistent, 2 consumers alternating tiles)";
    case S8Sm90Tile::k64x256pp: return "64x256 ping-pong (persistent, 2 consumers alternating tiles)";
    default: return "auto";
  }
}

bool s8_gemm_sm90_offsets_ok(const OffsetCodes& o) {
  return offset_codes_valid(o) && aligned(o.w_sums, 8);
}

void s8_gemm_sm90(bf16* y, const int8_t* xc, const float* sx, const int8_t* wc, const float* sw,
                  int64_t N, int64_t K, int64_t M, cudaStream_t stream, S8Sm90Tile tile,
                  int group_rows, const OffsetCodes* offsets) {
  QUEST_CHECK(s8_gemm_sm90_available(),
              "s8_gemm_sm90: the current device is not sm_90 or the binary lacks sm_90a code");
  QUEST_CHECK(group_rows >= 0, "s8_gemm_sm90: group_rows {} < 0", group_rows);
  QUEST_CHECK(s8_gemm_sm90_supports(y, xc, sx, wc, sw, N, K, M),
              "s8_gemm_sm90: shape N={} K={} M={} (K a positive multiple of 16 up to 133000, "
              "M % 8 == 0, N, M < 2^31) or alignment (xc, wc, y 16 bytes; sx, sw 8 bytes)",
              N, K, M);
  QUEST_CHECK(!offsets || s8_gemm_sm90_offsets_ok(*offsets),
              "s8_gemm_sm90: offset codes need both row sums (w_sums 8-byte aligned) and widths "
              "of 1 to {} bits", kOffsetMaxBits);
  if (N == 0 || M == 0) return;
  if (tile == S8Sm90Tile::kAuto) tile = s8_gemm_sm90_tile(N, K, M);
  auto run = [&]<class C>() {
    if (offsets)
      launch<C, true>(y, xc, sx, wc, sw, N, K, M, group_rows, offsets, stream);
    else
      launch<C, false>(y, xc, sx, wc, sw, N, K, M, group_rows, nullptr, stream);
  };
  switch (tile) {
    case S8Sm90Tile::k128x128: run.template operator()<CfgS>(); break;
    case S8Sm90Tile::k128x256p: run.template operator()<CfgLP>(); break;
    case S8Sm90Tile::k128x128pp: run.template operator()<CfgPP128>(); break;
    case S8Sm90Tile::k64x256pp: run.template operator()<CfgPP256>(); break;
    default: run.template operator()<CfgL>(); break;
  }
}

}  // namespace quest::cuda
