// Causal attention backward, flash-attention style (FlashAttention-2's backward algorithm), in
// three deterministic kernels (no atomics: the same inputs give bit-identical gradients):
//   1. D[bh, t] = sum_d dO[t, d] * O[t, d]        (fp32, into the caller's scratch)
//   2. per key tile: dV = P^T dO and dK = scale * dS^T Q, accumulated in registers while the
//      query tiles stream through shared memory,
//   3. per query tile: dQ = scale * dS K, accumulated in registers while the key tiles stream,
// with P = exp(scale * q.k - lse) recomputed from the forward's lse (exactly the softmax, no
// rescaling) and dS = P * (dP - D), dP = dO v^T. Scores never reach memory. Recomputing S and dP
// in kernel 3 costs two more products than dQ by atomics; it keeps the result deterministic.
// Fragment layouts, ldmatrix patterns and the shared-row padding: see attention_common.cuh.
#include <cmath>
#include <cstring>

#include "ops/cuda/attention_common.cuh"
#include "ops/cuda/common.cuh"  // QUEST_CUDA_REQUIRE (quest::Error without core/error.h's fmt)
#include "ops/cuda_ops.h"

namespace quest::cuda {
namespace attn {

// ---- 1. D = rowsum(dO * O) ---------------------------------------------------------------------
// One half-warp per (b, t, h) row: lane i of the half takes the 16-byte chunk i (head_dim <= 128
// is at most 16 chunks), then a 4-step butterfly inside the half. Rows are enumerated in memory
// order r = (b * T + t) * n_head + h, whose data start at r * hd in out and dout.
__global__ void attention_bwd_dot_kernel(float* __restrict__ D, const __nv_bfloat16* __restrict__ dout,
                                         const __nv_bfloat16* __restrict__ out, int64_t rows, int T,
                                         int n_head, int hd) {
  const int64_t r = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 16;
  const int c = threadIdx.x % 16;
  float acc = 0.f;
  if (r < rows && c < hd / 8) {
    const int4 a = *reinterpret_cast<const int4*>(dout + r * hd + c * 8);
    const int4 o = *reinterpret_cast<const int4*>(out + r * hd + c * 8);
    __nv_bfloat162 a2[4], o2[4];
    memcpy(a2, &a, sizeof(a2));
    memcpy(o2, &o, sizeof(o2));
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 fa = __bfloat1622float2(a2[i]), fo = __bfloat1622float2(o2[i]);
      acc = fmaf(fa.x, fo.x, acc);
      acc = fmaf(fa.y, fo.y, acc);
    }
  }
#pragma unroll
  for (int k = 8; k >= 1; k >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, k);
  if (r < rows && c == 0) {
    const int64_t bt = r / n_head, h = r % n_head, b = bt / T, t = bt % T;
    D[(b * n_head + h) * T + t] = acc;
  }
}

// ---- 2. dK, dV ---------------------------------------------------------------------------------
// Grid (B * n_head, ceil(T / 64)); block 128 threads = 4 warps. Block (bh, kt) owns keys
// k0 = 64 kt .. k0 + 63 (key tile 0 has the most queries and comes first); warp w owns keys
// kw0 = k0 + 16w .. kw0 + 15 and accumulates their dK[16][HDP] and dV[16][HDP] (fp32 registers).
// Query tiles of 32 rows, i = k0 / 32 .. ceil(T / 32) - 1 (earlier queries see none of these
// keys), stream through double-buffered shared stages; each warp takes a tile as two slices of 16
// queries, one after the other (fewer live registers next to the 128 of dK and dV), and per slice
// computes in registers
//   S^T = K_w Q^T and dP^T = V_w dO^T (16 x 16), P^T = exp2(S^T scale log2e - lse log2e),
//   dS^T = P^T (dP^T - D), then dV += P^T dO and dK += dS^T Q (P^T, dS^T as bf16 A fragments).
// A warp skips a slice whose queries all precede its keys (P = 0 there). The causal mask
// (query < key -> P = 0) and the tail mask (query >= T) are applied on the slices that reach into
// the warp's keys or past T. Keys >= T are zero-filled and never stored.
// Shared memory (bf16 rows of SROW = HDP + 8): sK[64][SROW], sV[64][SROW] (loaded once; the
// warps' A fragments are read from there each tile), sQ[2][32][SROW], sdO[2][32][SROW],
// sL[2][32], sD[2][32] (fp32 lse and D of the tile's queries; zero-filled past T). At the end the
// 64 rows of sQ[0..1] stage dK and those of sdO[0..1] stage dV for coalesced stores.
template <int HDP>
struct BwdKVCfg {
  static constexpr int kBN = 64, kBM = 32, kSrow = Tile<HDP>::kSrow;
  static constexpr size_t kSmem =
      size_t(2 * kBN + 4 * kBM) * kSrow * sizeof(__nv_bfloat16) + 4 * kBM * sizeof(float);
  static_assert(kBN == 16 * kWarps && kBN == 2 * kBM, "one m16 strip per warp; staging fits");
  static_assert(2 * kBM <= kThreads, "lse and D copies: one thread per value");
};

template <int HDP>
__global__ void __launch_bounds__(kThreads) attention_bwd_dkdv_kernel(
    __nv_bfloat16* __restrict__ dqkv, const __nv_bfloat16* __restrict__ dout,
    const __nv_bfloat16* __restrict__ qkv, const float* __restrict__ lse,
    const float* __restrict__ Dsum, int T, int n_head, int hd, float scale, float scale_log2) {
  using Cfg = BwdKVCfg<HDP>;
  constexpr int BM = Cfg::kBM, BN = Cfg::kBN, SROW = Cfg::kSrow;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __nv_bfloat16* sK = reinterpret_cast<__nv_bfloat16*>(smem_raw);  // [BN][SROW]
  __nv_bfloat16* sV = sK + BN * SROW;                               // [BN][SROW]
  __nv_bfloat16* sQ = sV + BN * SROW;                               // [2][BM][SROW]
  __nv_bfloat16* sdO = sQ + 2 * BM * SROW;                          // [2][BM][SROW]
  float* sL = reinterpret_cast<float*>(sdO + 2 * BM * SROW);       // [2][BM]
  float* sD = sL + 2 * BM;                                          // [2][BM]

  const int bh = blockIdx.x, b = bh / n_head, h = bh % n_head;
  const int k0 = int(blockIdx.y) * BN;
  const int64_t C = int64_t(n_head) * hd, ld = 3 * C;
  const __nv_bfloat16* gq = qkv + int64_t(b) * T * ld + int64_t(h) * hd;
  const __nv_bfloat16* gdo = dout + int64_t(b) * T * C + int64_t(h) * hd;
  const float* lse_bh = lse + int64_t(bh) * T;
  const float* D_bh = Dsum + int64_t(bh) * T;
  const int hd_chunks = hd / 8;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane >> 2, tq = lane & 3;
  const int kw0 = k0 + warp * 16;
  const int i_begin = k0 / BM, n_qt = (T + BM - 1) / BM;

  const auto load_queries = [&](int i, int st) {
    const int q0 = i * BM;
    load_tile<BM, HDP>(sQ + st * BM * SROW, gq, ld, q0, T, hd_chunks);
    load_tile<BM, HDP>(sdO + st * BM * SROW, gdo, C, q0, T, hd_chunks);
    if (tid < BM) {
      const bool valid = q0 + tid < T;
      cp_async4(smem_addr(sL + st * BM + tid), valid ? lse_bh + q0 + tid : lse_bh, valid);
    } else if (tid < 2 * BM) {
      const bool valid = q0 + tid - BM < T;
      cp_async4(smem_addr(sD + st * BM + tid - BM), valid ? D_bh + q0 + tid - BM : D_bh, valid);
    }
  };

  load_tile<BN, HDP>(sK, gq + C, ld, k0, T, hd_chunks);
  load_tile<BN, HDP>(sV, gq + 2 * C, ld, k0, T, hd_chunks);
  load_queries(i_begin, 0);
  cp_async_commit();

  float dk[HDP / 8][4], dv[HDP / 8][4];
#pragma unroll
  for (int dt = 0; dt < HDP / 8; ++dt)
#pragma unroll
    for (int e = 0; e < 4; ++e) dk[dt][e] = dv[dt][e] = 0.f;

  for (int i = i_begin; i < n_qt; ++i) {
    const int st = (i - i_begin) & 1;
    if (i + 1 < n_qt) {  // prefetch the next query tile into the other stage
      load_queries(i + 1, st ^ 1);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const int q0 = i * BM;
    const __nv_bfloat16* q_s = sQ + st * BM * SROW;
    const __nv_bfloat16* do_s = sdO + st * BM * SROW;
    const float* l_s = sL + st * BM;
    const float* d_s = sD + st * BM;
    // The tile in 16-query slices (one k-step of the dV/dK products each), one after the other
    // to keep the transient registers few next to the 128 of dK and dV.
#pragma unroll 1
    for (int c0 = 0; c0 < BM; c0 += 16) {
      const int qs0 = q0 + c0;  // the slice's first query
      if (qs0 + 16 <= kw0) continue;  // every query of the slice precedes this warp's keys
      // S^T = K_w Q_s^T, dP^T = V_w dO_s^T: 16 keys x 16 queries (nt: queries qs0 + 8nt ..).
      float sT[2][4], dpT[2][4];
#pragma unroll
      for (int nt = 0; nt < 2; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) sT[nt][e] = dpT[nt][e] = 0.f;
#pragma unroll 2  // (no register array is indexed by ks)
      for (int ks = 0; ks < HDP / 16; ++ks) {
        uint32_t ka[4], va[4], qb[4], ob[4];
        ldsm_a<SROW>(ka, sK, warp * 16, ks * 16, lane);
        ldsm_a<SROW>(va, sV, warp * 16, ks * 16, lane);
        ldsm_bn<SROW>(qb, q_s, c0, ks * 16, lane);
        ldsm_bn<SROW>(ob, do_s, c0, ks * 16, lane);
        mma16816(sT[0], ka, qb[0], qb[1]);
        mma16816(sT[1], ka, qb[2], qb[3]);
        mma16816(dpT[0], va, ob[0], ob[1]);
        mma16816(dpT[1], va, ob[2], ob[3]);
      }
      // P^T and dS^T; lane (g, tq) holds keys kw0 + g (+8) and queries qs0 + 8nt + 2tq (+1).
      const bool mask = qs0 < kw0 + 16 || qs0 + 16 > T;
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) {
        const float2 lv = *reinterpret_cast<const float2*>(l_s + c0 + nt * 8 + 2 * tq);
        const float2 dvv = *reinterpret_cast<const float2*>(d_s + c0 + nt * 8 + 2 * tq);
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int qi = qs0 + nt * 8 + 2 * tq + (e & 1), ki = kw0 + g + (e >> 1) * 8;
          const float L = (e & 1) ? lv.y : lv.x, Dq = (e & 1) ? dvv.y : dvv.x;
          float p = exp2f(fmaf(sT[nt][e], scale_log2, -L * kLog2e));
          if (mask && (qi < ki || qi >= T)) p = 0.f;
          sT[nt][e] = p;
          dpT[nt][e] = p * (dpT[nt][e] - Dq);
        }
      }
      // dV += P^T dO_s, dK += dS^T Q_s (the scale is applied at the end).
      uint32_t pa[4], da[4];
      a_frag_from_c(pa, sT[0], sT[1]);
      a_frag_from_c(da, dpT[0], dpT[1]);
#pragma unroll
      for (int dd = 0; dd < HDP / 16; ++dd) {
        uint32_t ob[4], qb[4];
        ldsm_bk<SROW>(ob, do_s, c0, dd * 16, lane);
        ldsm_bk<SROW>(qb, q_s, c0, dd * 16, lane);
        mma16816(dv[2 * dd], pa, ob[0], ob[1]);
        mma16816(dv[2 * dd + 1], pa, ob[2], ob[3]);
        mma16816(dk[2 * dd], da, qb[0], qb[1]);
        mma16816(dk[2 * dd + 1], da, qb[2], qb[3]);
      }
    }
    __syncthreads();  // all warps are done with stage st before it is refilled
  }

  // dK (scaled) through sQ[0..1], dV through sdO[0..1]: 64 rows each.
  stage_strip<HDP>(sQ, warp * 16, dk, scale, scale, lane);
  stage_strip<HDP>(sdO, warp * 16, dv, 1.f, 1.f, lane);
  __syncthreads();
  __nv_bfloat16* gdk = dqkv + int64_t(b) * T * ld + int64_t(h) * hd + C;
  store_tile<BN, HDP>(gdk, ld, k0, T, hd_chunks, sQ);
  store_tile<BN, HDP>(gdk + C, ld, k0, T, hd_chunks, sdO);
}

// ---- 3. dQ -------------------------------------------------------------------------------------
// Grid (B * n_head, ceil(T / 64)); block 128 threads = 4 warps. Block (bh, y) owns the query tile
// qt = n_qt - 1 - y (longest rows first), rows q0 = 64 qt .. q0 + 63; warp w owns rows
// q0 + 16w .. q0 + 16w + 15 and accumulates their dQ[16][HDP] (fp32 registers); lane (g, tq)
// holds rows g and g+8, whose lse (as -lse log2e; -inf past T, so P = 0 there) and D it keeps in
// registers. Key tiles j = 0..qt of 64 keys (tile qt is the diagonal one and the only one
// masked) stream through double-buffered stages; per tile each warp computes S = Q K^T and
// dP = dO V^T (16 x 64), P, dS = P (dP - D) and dQ += dS K (dS as bf16 A fragments, K through
// ldmatrix.trans).
// Shared memory (rows of SROW = HDP + 8 bf16): sQ[64][SROW], sdO[64][SROW] (loaded once, A
// fragments re-read per tile), sK[2][64][SROW], sV[2][64][SROW]; sQ stages dQ at the end.
template <int HDP>
struct BwdQCfg {
  static constexpr int kBM = 64, kBN = 64, kSrow = Tile<HDP>::kSrow;
  static constexpr int kTile = 64 * kSrow;
  static constexpr size_t kSmem = 6 * size_t(kTile) * sizeof(__nv_bfloat16);
  static_assert(kBM == 16 * kWarps && kBM == kBN, "one m16 strip per warp; diagonal tile = qt");
};

template <int HDP>
__global__ void __launch_bounds__(kThreads) attention_bwd_dq_kernel(
    __nv_bfloat16* __restrict__ dqkv, const __nv_bfloat16* __restrict__ dout,
    const __nv_bfloat16* __restrict__ qkv, const float* __restrict__ lse,
    const float* __restrict__ Dsum, int T, int n_head, int hd, float scale, float scale_log2) {
  using Cfg = BwdQCfg<HDP>;
  constexpr int BM = Cfg::kBM, BN = Cfg::kBN, SROW = Cfg::kSrow, TILE = Cfg::kTile;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __nv_bfloat16* sQ = reinterpret_cast<__nv_bfloat16*>(smem_raw);  // [BM][SROW]
  __nv_bfloat16* sdO = sQ + TILE;                                   // [BM][SROW]
  __nv_bfloat16* sK = sdO + TILE;                                   // [2][BN][SROW]
  __nv_bfloat16* sV = sK + 2 * TILE;                                // [2][BN][SROW]

  const int bh = blockIdx.x, b = bh / n_head, h = bh % n_head;
  const int qt = int(gridDim.y) - 1 - int(blockIdx.y);
  const int q0 = qt * BM, n_kt = qt + 1;
  const int64_t C = int64_t(n_head) * hd, ld = 3 * C;
  const __nv_bfloat16* gq = qkv + int64_t(b) * T * ld + int64_t(h) * hd;
  const __nv_bfloat16* gk = gq + C;
  const __nv_bfloat16* gv = gq + 2 * C;
  const int hd_chunks = hd / 8;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane >> 2, tq = lane & 3;
  const int row0 = q0 + warp * 16 + g;  // this lane's rows: row0 and row0 + 8

  load_tile<BM, HDP>(sQ, gq, ld, q0, T, hd_chunks);
  load_tile<BM, HDP>(sdO, dout + int64_t(b) * T * C + int64_t(h) * hd, C, q0, T, hd_chunks);
  load_tile<BN, HDP>(sK, gk, ld, 0, T, hd_chunks);
  load_tile<BN, HDP>(sV, gv, ld, 0, T, hd_chunks);
  cp_async_commit();

  float nl[2], Dr[2];  // -lse * log2(e) and D of rows row0, row0 + 8
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = row0 + 8 * r;
    nl[r] = row < T ? -lse[int64_t(bh) * T + row] * kLog2e : -INFINITY;
    Dr[r] = row < T ? Dsum[int64_t(bh) * T + row] : 0.f;
  }
  float dq[HDP / 8][4];
#pragma unroll
  for (int dt = 0; dt < HDP / 8; ++dt) dq[dt][0] = dq[dt][1] = dq[dt][2] = dq[dt][3] = 0.f;

  for (int j = 0; j < n_kt; ++j) {
    const int st = j & 1;
    if (j + 1 < n_kt) {
      load_tile<BN, HDP>(sK + (st ^ 1) * TILE, gk, ld, (j + 1) * BN, T, hd_chunks);
      load_tile<BN, HDP>(sV + (st ^ 1) * TILE, gv, ld, (j + 1) * BN, T, hd_chunks);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const __nv_bfloat16* k_s = sK + st * TILE;
    const __nv_bfloat16* v_s = sV + st * TILE;

    float s[BN / 8][4], dp[BN / 8][4];
#pragma unroll
    for (int nt = 0; nt < BN / 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[nt][e] = dp[nt][e] = 0.f;
#pragma unroll 1  // (no register array is indexed by ks; unrolling only raises the pressure)
    for (int ks = 0; ks < HDP / 16; ++ks) {
      uint32_t qa[4], oa[4];
      ldsm_a<SROW>(qa, sQ, warp * 16, ks * 16, lane);
      ldsm_a<SROW>(oa, sdO, warp * 16, ks * 16, lane);
#pragma unroll
      for (int jj = 0; jj < BN / 16; ++jj) {
        uint32_t kb[4], vb[4];
        ldsm_bn<SROW>(kb, k_s, jj * 16, ks * 16, lane);
        ldsm_bn<SROW>(vb, v_s, jj * 16, ks * 16, lane);
        mma16816(s[2 * jj], qa, kb[0], kb[1]);
        mma16816(s[2 * jj + 1], qa, kb[2], kb[3]);
        mma16816(dp[2 * jj], oa, vb[0], vb[1]);
        mma16816(dp[2 * jj + 1], oa, vb[2], vb[3]);
      }
    }
    // dS = P (dP - D), into s.
#pragma unroll
    for (int nt = 0; nt < BN / 8; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float p = exp2f(fmaf(s[nt][e], scale_log2, nl[e >> 1]));
        if (j == qt && j * BN + nt * 8 + 2 * tq + (e & 1) > row0 + (e >> 1) * 8) p = 0.f;
        s[nt][e] = p * (dp[nt][e] - Dr[e >> 1]);
      }
    }
    // dQ += dS K.
    mma_strip_times_tile<BN, HDP, SROW>(dq, s, k_s, lane);
    __syncthreads();  // all warps are done with stage st before it is refilled
  }

  stage_strip<HDP>(sQ, warp * 16, dq, scale, scale, lane);
  __syncthreads();
  store_tile<BM, HDP>(dqkv + int64_t(b) * T * ld + int64_t(h) * hd, ld, q0, T, hd_chunks, sQ);
}

template <int HDP>
void launch_backward(__nv_bfloat16* dqkv, const __nv_bfloat16* dout, const __nv_bfloat16* qkv,
                     const float* lse, const float* Dsum, int64_t B, int64_t T, int64_t n_head,
                     int64_t hd, cudaStream_t stream) {
  const double scale = 1.0 / std::sqrt(double(hd));
  const float fscale = float(scale), fscale_log2 = float(scale * 1.4426950408889634);
  const unsigned n64 = unsigned((T + 63) / 64);
  {
    using Cfg = BwdKVCfg<HDP>;
    const auto kernel = attention_bwd_dkdv_kernel<HDP>;
    QUEST_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          int(Cfg::kSmem)));
    kernel<<<dim3(unsigned(B * n_head), n64), kThreads, Cfg::kSmem, stream>>>(
        dqkv, dout, qkv, lse, Dsum, int(T), int(n_head), int(hd), fscale, fscale_log2);
    QUEST_CUDA_CHECK(cudaGetLastError());
  }
  {
    using Cfg = BwdQCfg<HDP>;
    const auto kernel = attention_bwd_dq_kernel<HDP>;
    QUEST_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          int(Cfg::kSmem)));
    kernel<<<dim3(unsigned(B * n_head), n64), kThreads, Cfg::kSmem, stream>>>(
        dqkv, dout, qkv, lse, Dsum, int(T), int(n_head), int(hd), fscale, fscale_log2);
    QUEST_CUDA_CHECK(cudaGetLastError());
  }
}

}  // namespace attn

int64_t attention_backward_scratch(int64_t B, int64_t T, int64_t n_head, int64_t head_dim) {
  return B * n_head * T;  // D, one float per (batch, head, query)
}

void attention_backward(bf16* dqkv, const bf16* dout, const bf16* out, const bf16* qkv,
                        const float* lse, int64_t B, int64_t T, int64_t n_head, int64_t head_dim,
                        float* scratch, cudaStream_t stream) {
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
  const int64_t rows = B * T * n_head;
  const int threads = 256;  // 16 rows per block
  attn::attention_bwd_dot_kernel<<<unsigned((rows + 15) / 16), threads, 0, stream>>>(
      scratch, dout, out, rows, int(T), int(n_head), int(head_dim));
  QUEST_CUDA_CHECK(cudaGetLastError());
  if (head_dim <= 64)
    attn::launch_backward<64>(dqkv, dout, qkv, lse, scratch, B, T, n_head, head_dim, stream);
  else
    attn::launch_backward<128>(dqkv, dout, qkv, lse, scratch, B, T, n_head, head_dim, stream);
}

}  // namespace quest::cuda
