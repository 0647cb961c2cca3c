// Causal attention backward, flash-attention style (FlashAttention-2's backward algorithm), in
// two deterministic kernels (no atomics: the same inputs give bit-identical gradients):
//   1. per block of 128 queries: D[t] = sum_d dO[t, d] * O[t, d] (fp32, into the caller's
//      scratch, for kernel 2), then dQ = scale * dS K, accumulated in registers while the key
//      tiles stream through shared memory,
//   2. per block of 128 keys: dV = P^T dO and dK = scale * dS^T Q, accumulated in registers while
//      the query tiles stream,
// with P = exp(scale * q.k - lse) recomputed from the forward's lse (exactly the softmax, no
// rescaling) and dS = P * (dP - D), dP = dO v^T. Scores never reach memory. Recomputing S and dP
// in kernel 1 costs two more products than dQ by atomics; it keeps the result deterministic.
// In both kernels a (query block, key block) pair is done in two phases (bwd_scores, then the
// accumulating products): 8 warps compute S and dP in 32 x 32 sub-tiles (every fragment read
// from shared memory feeds two or four mma), P and dS go to shared memory as bf16 (the precision
// the products use anyway), and after a barrier each warp multiplies its own 32 rows of the
// result (keys for dK/dV, queries for dQ) by half of the head dimension.
// Fragment layouts, ldmatrix patterns and the shared-row padding: see attention_common.cuh.
#include <cmath>
#include <cstring>

#include "ops/cuda/attention_backward_sm90.h"
#include "ops/cuda/attention_common.cuh"
#include "ops/cuda/common.cuh"  // QUEST_CUDA_REQUIRE (quest::Error without core/error.h's fmt)
#include "ops/cuda_ops.h"

namespace quest::cuda {
namespace attn {

constexpr int kBwdWarps = 8, kBwdThreads = 32 * kBwdWarps;

// S, dP (C fragments of a warp's 32 x 32 sub-tile: two m16 strips x four n8 tiles; lane (g, tq)
// holds rows qrow + 16 i + g (+ 8) and keys key0 + 8 nt + 2 tq (+ 1)) -> P = 2^(S scale log2e -
// lse log2e) in s and dS = P (dP - D) in dp. MASK: P = 0 where the key passes the query or the
// query is >= T. l_s, d_s: lse and D, indexed by the row in the block (qr + ...).
template <bool MASK>
__device__ __forceinline__ void p_and_ds(float (&s)[2][4][4], float (&dp)[2][4][4],
                                         const float* l_s, const float* d_s, int qrow, int key0,
                                         int qr, int T, float scale_log2, int lane) {
  const int g = lane >> 2, tq = lane & 3;
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
      const int r = 16 * i + g + 8 * hr;  // the row in the sub-tile
      const float nl = -l_s[qr + r] * kLog2e, Dq = d_s[qr + r];
#pragma unroll
      for (int nt = 0; nt < 4; ++nt)
#pragma unroll
        for (int e1 = 0; e1 < 2; ++e1) {
          const int e = 2 * hr + e1;
          float p = ex2(fmaf(s[i][nt][e], scale_log2, nl));
          if (MASK && (key0 + nt * 8 + 2 * tq + e1 > qrow + r || qrow + r >= T)) p = 0.f;
          s[i][nt][e] = p;
          dp[i][nt][e] = p * (dp[i][nt][e] - Dq);
        }
    }
}

// ---- P and dS of one (query block, key block) pair -------------------------------------------
// QM queries (q0..) x KN keys (k0..), the 8 warps in a (QM / 32) x (KN / 32) grid: warp w takes
// queries 32 wm .. + 31 (wm = w % (QM / 32)) and keys 32 wn .. + 31 (wn = w / (QM / 32)), as two
// m16 strips x four n8 tiles of S = Q K^T and dP = dO V^T (Q, dO fragments via ldmatrix A, K, V
// via the N-major B pattern). Then P = 2^(S scale log2e - lse log2e), masked to 0 where the key
// passes the query or the query is >= T, and dS = P (dP - D); both rounded to bf16 and written to
// sP (if STORE_P) and sdS, rows of KN + 8. A sub-tile whose keys all pass its queries is written
// as zeros without computing it. Q, dO: tiles of QM rows at q_s, do_s; K, V: KN rows at k_s, v_s
// (shared addresses, row stride HDP + 8); l_s, d_s: lse and D of the QM queries (0 past T).
// The caller brackets it with barriers (inputs landed before; sP/sdS read after).
template <int HDP, int QM, int KN, bool STORE_P>
__device__ __forceinline__ void bwd_scores(__nv_bfloat16* sP, __nv_bfloat16* sdS, uint32_t q_s,
                                           uint32_t do_s, uint32_t k_s, uint32_t v_s,
                                           const float* l_s, const float* d_s, int q0, int k0,
                                           int T, float scale_log2, int warp, int lane) {
  constexpr int SROW = Tile<HDP>::kSrow, PROW = KN + 8, WM = QM / 32;
  static_assert(WM * (KN / 32) == kBwdWarps, "one 32 x 32 sub-tile per warp");
  const int wm = warp % WM, wn = warp / WM, g = lane >> 2, tq = lane & 3;
  const int qr = 32 * wm, kc = 32 * wn;  // the sub-tile's corner in the block

  float s[2][4][4], dp[2][4][4];
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int nt = 0; nt < 4; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[i][nt][e] = dp[i][nt][e] = 0.f;
  const bool skip = k0 + kc > q0 + qr + 31;  // every key after every query: P = dS = 0
  if (!skip) {
    const uint32_t la = lane_a<SROW>(lane), ln = lane_n<SROW>(lane);
    // S and dP in one k loop: 16 independent accumulator tiles between two uses of each (8 would
    // leave the tensor pipe waiting on the previous mma's result).
#pragma unroll
    for (int ks = 0; ks < HDP / 16; ++ks) {
      uint32_t qa[2][4], kb[2][4], oa[2][4], vb[2][4];
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        ldsm_a<SROW>(qa[i], q_s + la, qr + 16 * i, 16 * ks);
        ldsm_a<SROW>(oa[i], do_s + la, qr + 16 * i, 16 * ks);
      }
#pragma unroll
      for (int jj = 0; jj < 2; ++jj) {
        ldsm_bn<SROW>(kb[jj], k_s + ln, kc + 16 * jj, 16 * ks);
        ldsm_bn<SROW>(vb[jj], v_s + ln, kc + 16 * jj, 16 * ks);
      }
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int jj = 0; jj < 2; ++jj) {
          mma16816(s[i][2 * jj], qa[i], kb[jj][0], kb[jj][1]);
          mma16816(dp[i][2 * jj], oa[i], vb[jj][0], vb[jj][1]);
          mma16816(s[i][2 * jj + 1], qa[i], kb[jj][2], kb[jj][3]);
          mma16816(dp[i][2 * jj + 1], oa[i], vb[jj][2], vb[jj][3]);
        }
    }
    // The mask only where a key may pass a query or a query may be >= T (a branch per warp: the
    // unmasked code has no per-element tests).
    if (k0 + kc + 31 > q0 + qr || q0 + qr + 31 >= T)
      p_and_ds<true>(s, dp, l_s, d_s, q0 + qr, k0 + kc, qr, T, scale_log2, lane);
    else
      p_and_ds<false>(s, dp, l_s, d_s, q0 + qr, k0 + kc, qr, T, scale_log2, lane);
  }
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
      const int r = qr + 16 * i + g + 8 * hr;
#pragma unroll
      for (int nt = 0; nt < 4; ++nt) {
        const int c = kc + nt * 8 + 2 * tq;
        if constexpr (STORE_P)
          *reinterpret_cast<uint32_t*>(sP + r * PROW + c) =
              pack_bf16(s[i][nt][2 * hr], s[i][nt][2 * hr + 1]);
        *reinterpret_cast<uint32_t*>(sdS + r * PROW + c) =
            pack_bf16(dp[i][nt][2 * hr], dp[i][nt][2 * hr + 1]);
      }
    }
}

// ---- 1. D and dQ -------------------------------------------------------------------------------
// Grid B * n_head * n_qt (n_qt = ceil(T / 128)); block 256 threads = 8 warps, one block per SM.
// Block x owns (batch, head) bh = x / n_qt and the query tile qt = n_qt - 1 - x % n_qt (longest
// rows first), rows q0 = 128 qt .. q0 + 127: the tiles of one head run together and share its
// K and V through L2 (see the forward).
// Prologue: Q, dO and O of the tile (O in stage 1 of the K/V buffers, free until tile 1), lse;
// D = rowsum(dO * O) by thread pairs (fp32), kept in sD and written to the scratch for kernel 2.
// Key tiles j = 0 .. min(2 qt + 2, ceil(T / 64)) - 1 of 64 keys stream through two stages
// (one barrier per tile, as in the forward: after it tile j has landed and tile j - 1's stage is
// free for tile j + 1). Per tile: bwd_scores (128 x 64: 4 x 2 warps) -> sdS, a barrier, then
// warp w accumulates dQ for rows 32 (w / 2) .. + 31 and head-dim columns (w % 2) HDP / 2 .. in
// fp32 registers: dQ += dS K (dS via ldmatrix A, K via the K-major B pattern). A warp skips the
// product when all its rows precede the tile's keys.
// Shared memory: sQ[128][SROW], sdO[128][SROW], sKV[2][K, V][64][SROW], sdS[128][64 + 8],
// sL[128], sD[128]; sQ stages dQ at the end.
template <int HDP>
struct BwdQCfg {
  static constexpr int kQM = 128, kKN = 64, kSrow = Tile<HDP>::kSrow, kProw = kKN + 8;
  static constexpr int kKV = kKN * kSrow;  // bf16 per K or V tile
  static constexpr size_t kSmem =
      (2 * size_t(kQM) * kSrow + 4 * size_t(kKV) + size_t(kQM) * kProw) * sizeof(__nv_bfloat16) +
      2 * kQM * sizeof(float);
  static_assert(kQM == 2 * kKN, "key tiles 2 qt and 2 qt + 1 are the diagonal ones; O fits stage 1");
  static_assert(kQM <= kBwdThreads && 2 * kQM == kBwdThreads, "lse copies, D by thread pairs");
};

template <int HDP>
__global__ void __launch_bounds__(kBwdThreads, 1) attention_bwd_dq_kernel(
    __nv_bfloat16* __restrict__ dqkv, float* __restrict__ Dsum,
    const __nv_bfloat16* __restrict__ dout, const __nv_bfloat16* __restrict__ out,
    const __nv_bfloat16* __restrict__ qkv, const float* __restrict__ lse, int T, int n_head, int hd,
    float scale, float scale_log2) {
  using Cfg = BwdQCfg<HDP>;
  constexpr int QM = Cfg::kQM, KN = Cfg::kKN, SROW = Cfg::kSrow, PROW = Cfg::kProw, KV = Cfg::kKV;
  constexpr int NT = kBwdThreads;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __nv_bfloat16* sQ = reinterpret_cast<__nv_bfloat16*>(smem_raw);  // [QM][SROW]
  __nv_bfloat16* sdO = sQ + QM * SROW;                              // [QM][SROW]
  __nv_bfloat16* sKV = sdO + QM * SROW;                             // [2][K, V][KN][SROW]
  __nv_bfloat16* sdS = sKV + 4 * KV;                                // [QM][PROW]
  float* sL = reinterpret_cast<float*>(sdS + QM * PROW);           // [QM]
  float* sD = sL + QM;                                              // [QM]

  const int n_qt = (T + QM - 1) / QM;
  const int bh = int(blockIdx.x) / n_qt, b = bh / n_head, h = bh % n_head;
  const int qt = n_qt - 1 - int(blockIdx.x) % n_qt;
  const int q0 = qt * QM;
  const int n_kt = min(2 * qt + 2, (T + KN - 1) / KN);
  const int64_t C = int64_t(n_head) * hd, ld = 3 * C;
  const __nv_bfloat16* gq = qkv + int64_t(b) * T * ld + int64_t(h) * hd;
  const __nv_bfloat16* gk = gq + C;
  const __nv_bfloat16* gv = gq + 2 * C;
  const int64_t orow = int64_t(b) * T * C + int64_t(h) * hd;  // dO and O of this head, row 0
  const float* lse_bh = lse + int64_t(bh) * T;
  const int hd_chunks = hd / 8;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;

  load_tile<QM, HDP, NT>(sQ, gq, ld, q0, T, hd_chunks);
  load_tile<QM, HDP, NT>(sdO, dout + orow, C, q0, T, hd_chunks);
  load_tile<QM, HDP, NT>(sKV + 2 * KV, out + orow, C, q0, T, hd_chunks);  // O -> stage 1
  load_tile<KN, HDP, NT>(sKV, gk, ld, 0, T, hd_chunks);
  load_tile<KN, HDP, NT>(sKV + KV, gv, ld, 0, T, hd_chunks);
  if (tid < QM) {
    const bool valid = q0 + tid < T;
    cp_async4(smem_addr(sL + tid), valid ? lse_bh + q0 + tid : lse_bh, valid);
  }
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();
  {  // D: thread pair (2r, 2r + 1) sums row r, half a row each (zero-filled past T and hd).
    const int r = tid >> 1, c0 = (tid & 1) * (HDP / 2);
    const __nv_bfloat16* a = sdO + r * SROW + c0;
    const __nv_bfloat16* o = sKV + 2 * KV + r * SROW + c0;
    float acc = 0.f;
#pragma unroll
    for (int c = 0; c < HDP / 2; c += 8) acc = dot8_bf16(a + c, o + c, acc);
    publish_row_d(acc, (tid & 1) == 0, r, sD, Dsum, int64_t(bh), q0, T);
  }
  // (The loop's first barrier publishes sD and frees stage 1.)

  const int wq = warp >> 1, cb = (warp & 1) * (HDP / 2);  // dQ rows 32 wq .., columns cb ..
  float dq[2][HDP / 16][4];
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int dt = 0; dt < HDP / 16; ++dt) dq[i][dt][0] = dq[i][dt][1] = dq[i][dt][2] = dq[i][dt][3] = 0.f;
  const uint32_t q_s = smem_addr(sQ), do_s = smem_addr(sdO), kv_base = smem_addr(sKV);
  const uint32_t ds_a = smem_addr(sdS) + lane_a<PROW>(lane);

  for (int j = 0; j < n_kt; ++j) {
    cp_async_wait<0>();
    __syncthreads();
    if (j + 1 < n_kt) {
      __nv_bfloat16* nxt = sKV + ((j + 1) & 1) * 2 * KV;
      load_tile<KN, HDP, NT>(nxt, gk, ld, (j + 1) * KN, T, hd_chunks);
      load_tile<KN, HDP, NT>(nxt + KV, gv, ld, (j + 1) * KN, T, hd_chunks);
      cp_async_commit();
    }
    const uint32_t k_s = kv_base + (j & 1) * (2 * KV * 2);
    bwd_scores<HDP, QM, KN, false>(nullptr, sdS, q_s, do_s, k_s, k_s + KV * 2, sL, sD, q0, j * KN, T,
                                   scale_log2, warp, lane);
    __syncthreads();
    if (q0 + 32 * wq + 31 >= j * KN) {  // some row of the warp reaches a key of the tile
      const uint32_t k_a = k_s + lane_a<SROW>(lane);
#pragma unroll
      for (int kk = 0; kk < KN / 16; ++kk) {
        uint32_t a[2][4];
#pragma unroll
        for (int i = 0; i < 2; ++i) ldsm_a<PROW>(a[i], ds_a, 32 * wq + 16 * i, 16 * kk);
#pragma unroll
        for (int dd = 0; dd < HDP / 32; ++dd) {
          uint32_t kb[4];
          ldsm_bk<SROW>(kb, k_a, 16 * kk, cb + 16 * dd);
#pragma unroll
          for (int i = 0; i < 2; ++i) {
            mma16816(dq[i][2 * dd], a[i], kb[0], kb[1]);
            mma16816(dq[i][2 * dd + 1], a[i], kb[2], kb[3]);
          }
        }
      }
    }
  }

  // sQ is free: its last reader, bwd_scores of the last tile, is behind the last barrier.
#pragma unroll
  for (int i = 0; i < 2; ++i)
    stage_frags<SROW, HDP / 16>(sQ, 32 * wq + 16 * i, cb, dq[i], scale, scale, lane);
  __syncthreads();
  store_tile<QM, HDP, NT>(dqkv + int64_t(b) * T * ld + int64_t(h) * hd, ld, q0, T, hd_chunks, sQ);
}

// ---- 2. dK, dV ---------------------------------------------------------------------------------
// Grid B * n_head * n_kb (n_kb = ceil(T / 128)); block 256 threads = 8 warps, one block per SM.
// Block x owns (batch, head) bh = x / n_kb and keys k0 = 128 (x % n_kb) .. k0 + 127 (key block 0
// has the most queries and comes first; the blocks of one head share its Q and dO through L2);
// K and V stay in shared memory. Query tiles i = k0 / 64 .. ceil(T / 64) - 1 of 64 rows (earlier queries
// see none of these keys) stream through two stages (Q, dO, lse, D; one barrier per tile). Per
// tile: bwd_scores (64 x 128: 2 x 4 warps) -> sP, sdS, a barrier, then warp w accumulates dV and
// dK for keys 32 (w / 2) .. + 31 and head-dim columns (w % 2) HDP / 2 .. in fp32 registers:
// dV += P^T dO, dK += dS^T Q (P^T, dS^T via the transposed-A pattern, dO and Q via the K-major
// B pattern). A warp skips the products when all its keys pass the tile's queries. Keys >= T are
// zero-filled and never stored.
// Shared memory: sK[128][SROW], sV[128][SROW], sQD[2][Q, dO][64][SROW], sP[64][128 + 8],
// sdS[64][128 + 8], sL[2][64], sD[2][64]; sK and sV stage dK and dV at the end.
template <int HDP>
struct BwdKVCfg {
  static constexpr int kKN = 128, kQM = 64, kSrow = Tile<HDP>::kSrow, kProw = kKN + 8;
  static constexpr int kQT = kQM * kSrow;  // bf16 per Q or dO tile
  static constexpr size_t kSmem = (2 * size_t(kKN) * kSrow + 4 * size_t(kQT) +
                                   2 * size_t(kQM) * kProw) * sizeof(__nv_bfloat16) +
                                  4 * kQM * sizeof(float);
  static_assert(kKN % kQM == 0, "a key block starts on a query tile");
  static_assert(2 * kQM <= kBwdThreads, "lse and D copies: one thread per value");
};

template <int HDP>
__global__ void __launch_bounds__(kBwdThreads, 1) attention_bwd_dkdv_kernel(
    __nv_bfloat16* __restrict__ dqkv, const __nv_bfloat16* __restrict__ dout,
    const __nv_bfloat16* __restrict__ qkv, const float* __restrict__ lse,
    const float* __restrict__ Dsum, int T, int n_head, int hd, float scale, float scale_log2) {
  using Cfg = BwdKVCfg<HDP>;
  constexpr int QM = Cfg::kQM, KN = Cfg::kKN, SROW = Cfg::kSrow, PROW = Cfg::kProw, QT = Cfg::kQT;
  constexpr int NT = kBwdThreads;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __nv_bfloat16* sK = reinterpret_cast<__nv_bfloat16*>(smem_raw);  // [KN][SROW]
  __nv_bfloat16* sV = sK + KN * SROW;                               // [KN][SROW]
  __nv_bfloat16* sQD = sV + KN * SROW;                              // [2][Q, dO][QM][SROW]
  __nv_bfloat16* sP = sQD + 4 * QT;                                 // [QM][PROW]
  __nv_bfloat16* sdS = sP + QM * PROW;                              // [QM][PROW]
  float* sL = reinterpret_cast<float*>(sdS + QM * PROW);           // [2][QM]
  float* sD = sL + 2 * QM;                                          // [2][QM]

  const int n_kb = (T + KN - 1) / KN;
  const int bh = int(blockIdx.x) / n_kb, b = bh / n_head, h = bh % n_head;
  const int k0 = int(blockIdx.x) % n_kb * KN;
  const int64_t C = int64_t(n_head) * hd, ld = 3 * C;
  const __nv_bfloat16* gq = qkv + int64_t(b) * T * ld + int64_t(h) * hd;
  const __nv_bfloat16* gdo = dout + int64_t(b) * T * C + int64_t(h) * hd;
  const float* lse_bh = lse + int64_t(bh) * T;
  const float* D_bh = Dsum + int64_t(bh) * T;
  const int hd_chunks = hd / 8;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int i_begin = k0 / QM, n_qt = (T + QM - 1) / QM;

  const auto load_queries = [&](int i, int st) {
    const int q0 = i * QM;
    load_tile<QM, HDP, NT>(sQD + st * 2 * QT, gq, ld, q0, T, hd_chunks);
    load_tile<QM, HDP, NT>(sQD + st * 2 * QT + QT, gdo, C, q0, T, hd_chunks);
    if (tid < QM) {
      const bool valid = q0 + tid < T;
      cp_async4(smem_addr(sL + st * QM + tid), valid ? lse_bh + q0 + tid : lse_bh, valid);
    } else if (tid < 2 * QM) {
      const bool valid = q0 + tid - QM < T;
      cp_async4(smem_addr(sD + st * QM + tid - QM), valid ? D_bh + q0 + tid - QM : D_bh, valid);
    }
  };

  load_tile<KN, HDP, NT>(sK, gq + C, ld, k0, T, hd_chunks);
  load_tile<KN, HDP, NT>(sV, gq + 2 * C, ld, k0, T, hd_chunks);
  load_queries(i_begin, 0);
  cp_async_commit();

  const int wk = warp >> 1, cb = (warp & 1) * (HDP / 2);  // dK/dV keys 32 wk .., columns cb ..
  float dk[2][HDP / 16][4], dv[2][HDP / 16][4];
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int dt = 0; dt < HDP / 16; ++dt)
#pragma unroll
      for (int e = 0; e < 4; ++e) dk[i][dt][e] = dv[i][dt][e] = 0.f;
  const uint32_t k_s = smem_addr(sK), v_s = smem_addr(sV), qd_base = smem_addr(sQD);
  const uint32_t p_n = smem_addr(sP) + lane_n<PROW>(lane), ds_n = smem_addr(sdS) + lane_n<PROW>(lane);

  for (int i = i_begin; i < n_qt; ++i) {
    const int st = (i - i_begin) & 1;
    cp_async_wait<0>();
    __syncthreads();
    if (i + 1 < n_qt) {
      load_queries(i + 1, st ^ 1);
      cp_async_commit();
    }
    const int q0 = i * QM;
    const uint32_t q_s = qd_base + st * (2 * QT * 2), do_s = q_s + QT * 2;
    bwd_scores<HDP, QM, KN, true>(sP, sdS, q_s, do_s, k_s, v_s, sL + st * QM, sD + st * QM, q0, k0,
                                  T, scale_log2, warp, lane);
    __syncthreads();
    if (k0 + 32 * wk <= q0 + QM - 1) {  // some key of the warp is reached by a query of the tile
      const uint32_t q_a = q_s + lane_a<SROW>(lane), do_a = do_s + lane_a<SROW>(lane);
#pragma unroll
      for (int kk = 0; kk < QM / 16; ++kk) {
        uint32_t pa[2][4], da[2][4];
#pragma unroll
        for (int i2 = 0; i2 < 2; ++i2) {
          ldsm_at<PROW>(pa[i2], p_n, 16 * kk, 32 * wk + 16 * i2);
          ldsm_at<PROW>(da[i2], ds_n, 16 * kk, 32 * wk + 16 * i2);
        }
#pragma unroll
        for (int dd = 0; dd < HDP / 32; ++dd) {
          uint32_t ob[4], qb[4];
          ldsm_bk<SROW>(ob, do_a, 16 * kk, cb + 16 * dd);
          ldsm_bk<SROW>(qb, q_a, 16 * kk, cb + 16 * dd);
#pragma unroll
          for (int i2 = 0; i2 < 2; ++i2) {
            mma16816(dv[i2][2 * dd], pa[i2], ob[0], ob[1]);
            mma16816(dv[i2][2 * dd + 1], pa[i2], ob[2], ob[3]);
            mma16816(dk[i2][2 * dd], da[i2], qb[0], qb[1]);
            mma16816(dk[i2][2 * dd + 1], da[i2], qb[2], qb[3]);
          }
        }
      }
    }
  }

  // sK and sV are free: their last reader, bwd_scores of the last tile, is behind the last barrier.
#pragma unroll
  for (int i2 = 0; i2 < 2; ++i2) {
    stage_frags<SROW, HDP / 16>(sK, 32 * wk + 16 * i2, cb, dk[i2], scale, scale, lane);
    stage_frags<SROW, HDP / 16>(sV, 32 * wk + 16 * i2, cb, dv[i2], 1.f, 1.f, lane);
  }
  __syncthreads();
  __nv_bfloat16* gdk = dqkv + int64_t(b) * T * ld + int64_t(h) * hd + C;
  store_tile<KN, HDP, NT>(gdk, ld, k0, T, hd_chunks, sK);
  store_tile<KN, HDP, NT>(gdk + C, ld, k0, T, hd_chunks, sV);
}

template <int HDP>
void launch_backward(__nv_bfloat16* dqkv, const __nv_bfloat16* dout, const __nv_bfloat16* out,
                     const __nv_bfloat16* qkv, const float* lse, float* Dsum, int64_t B, int64_t T,
                     int64_t n_head, int64_t hd, cudaStream_t stream) {
  static_assert(BwdQCfg<HDP>::kQM == 128 && BwdKVCfg<HDP>::kKN == 128, "one block count check");
  QUEST_CUDA_REQUIRE(B * n_head * ((T + 127) / 128) < (int64_t{1} << 31),
                     "attention_backward: B * n_head * ceil(T / 128) exceeds 2^31 - 1");
  const double scale = 1.0 / std::sqrt(double(hd));
  const float fscale = float(scale), fscale_log2 = float(scale * 1.4426950408889634);
  {
    using Cfg = BwdQCfg<HDP>;
    const auto kernel = attention_bwd_dq_kernel<HDP>;
    QUEST_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          int(Cfg::kSmem)));
    kernel<<<unsigned(B * n_head * ((T + Cfg::kQM - 1) / Cfg::kQM)), kBwdThreads, Cfg::kSmem, stream>>>(dqkv, Dsum, dout, out, qkv, lse, int(T),
                                                      int(n_head), int(hd), fscale, fscale_log2);
    QUEST_CUDA_CHECK(cudaGetLastError());
  }
  {
    using Cfg = BwdKVCfg<HDP>;
    const auto kernel = attention_bwd_dkdv_kernel<HDP>;
    QUEST_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          int(Cfg::kSmem)));
    kernel<<<unsigned(B * n_head * ((T + Cfg::kKN - 1) / Cfg::kKN)), kBwdThreads, Cfg::kSmem, stream>>>(dqkv, dout, qkv, lse, Dsum, int(T),
                                                      int(n_head), int(hd), fscale, fscale_log2);
    QUEST_CUDA_CHECK(cudaGetLastError());
  }
}

}  // namespace attn

int64_t attention_backward_scratch(int64_t B, int64_t T, int64_t n_head, int64_t head_dim) {
  return B * n_head * T;  // D, one float per (batch, head, query)
}

// On sm_90 with head_dim 128 the wgmma kernels (attention_backward_sm90.cu, 1.46x faster at the
// training shapes on the H100) take over, unless QUEST_ATTN_SM90_BWD=0. Both paths are
// deterministic with the same summation orders (identical bits on the H100, 2026-11-24).
void attention_backward(bf16* dqkv, const bf16* dout, const bf16* out, const bf16* qkv,
                        const float* lse, int64_t B, int64_t T, int64_t n_head, int64_t head_dim,
                        float* scratch, cudaStream_t stream) {
  if (attention_backward_uses_sm90(head_dim))
    attention_backward_sm90(dqkv, dout, out, qkv, lse, B, T, n_head, head_dim, scratch, stream);
  else
    attention_backward_mma(dqkv, dout, out, qkv, lse, B, T, n_head, head_dim, scratch, stream);
}

void attention_backward_mma(bf16* dqkv, const bf16* dout, const bf16* out, const bf16* qkv,
                            const float* lse, int64_t B, int64_t T, int64_t n_head,
                            int64_t head_dim, float* scratch, cudaStream_t stream) {
  attn::check_attention_args("attention_backward", B, T, n_head, head_dim);
  if (B * T * n_head == 0) return;
  QUEST_CUDA_REQUIRE(dqkv && dout && out && qkv && lse && scratch,
                     "attention_backward: null pointer");
  using detail::aligned;
  using detail::aligned16;
  QUEST_CUDA_REQUIRE(aligned16(dqkv) && aligned16(dout) && aligned16(out) && aligned16(qkv) &&
                         aligned(lse, 4) && aligned(scratch, 4),
                     "attention_backward: dqkv, dout, out and qkv must be 16-byte aligned, lse and "
                     "scratch 4-byte aligned");
  if (head_dim <= 64)
    attn::launch_backward<64>(dqkv, dout, out, qkv, lse, scratch, B, T, n_head, head_dim, stream);
  else
    attn::launch_backward<128>(dqkv, dout, out, qkv, lse, scratch, B, T, n_head, head_dim, stream);
}

}  // namespace quest::cuda
