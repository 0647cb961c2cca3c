// Causal attention forward, flash-attention style (FlashAttention-2's forward algorithm): for
// each block of 64 queries, the key/value tiles stream through shared memory; the scores
// S = q k^T (tensor cores, fp32 accumulation) stay in registers, an online softmax keeps each
// row's running max m and sum l (fp32), and O accumulates P V in registers. The T x T scores
// never reach memory. lse = m * scale + log(l) (natural log of the scaled scores) is saved for
// the backward pass. Fragment layouts, ldmatrix patterns and the shared-row padding: see
// attention_common.cuh.
#include <cmath>

#include "ops/cuda/attention_common.cuh"
#include "ops/cuda/common.cuh"  // QUEST_CUDA_REQUIRE (quest::Error without core/error.h's fmt)
#include "ops/cuda_ops.h"

namespace quest::cuda {
namespace attn {

// ---- kernel ----------------------------------------------------------------------------------
// Grid (B * n_head, ceil(T / 64)); block 128 threads = 4 warps. Block (bh, y) owns the query
// tile qt = n_qt - 1 - y (the longest rows first: causal work grows with qt), rows q0 = 64 qt ..
// q0 + 63 of (batch, head) bh; warp w owns query rows q0 + 16w .. q0 + 16w + 15 (one m16 strip)
// and everything computed for them: its Q fragments (registers, loaded once), S and P (registers,
// 64 keys at a time), the running m and l of its rows and O[16][HDP] (fp32 registers). Lane
// (g, q) holds rows g and g+8 of the strip (see the C layout).
// Key tiles j = 0..qt (64 keys each; BN == BM so tile qt is the diagonal one, the only one that
// needs the causal mask, which also removes keys >= T for every valid query).
// Shared memory, HDP + 8 bf16 per row: sK[2][64][SROW], sV[2][64][SROW] (double-buffered by
// cp.async: tile j + 1 loads while tile j is used). The Q tile is staged through sK[1] before
// the loop (it is read into registers, then a barrier frees sK[1] for tile 1); the final O
// tile is staged through sK[0] for coalesced 16-byte stores.
// Rows >= T and columns >= head_dim are zero-filled in shared memory, so padded keys and
// columns add exact zeros; outputs are stored only for rows < T and columns < head_dim.
template <int HDP>
struct FwdCfg {
  static constexpr int kBM = 64, kBN = 64, kSrow = Tile<HDP>::kSrow;
  static constexpr int kTile = kBN * kSrow;  // bf16 per K or V stage
  static constexpr size_t kSmem = 4 * size_t(kTile) * sizeof(__nv_bfloat16);
  static_assert(kBM == 16 * kWarps && kBM == kBN, "one m16 strip per warp; diagonal tile = qt");
};

template <int HDP>
__global__ void __launch_bounds__(kThreads) attention_forward_kernel(
    __nv_bfloat16* __restrict__ out, float* __restrict__ lse, const __nv_bfloat16* __restrict__ qkv,
    int T, int n_head, int hd, float scale, float scale_log2) {
  using Cfg = FwdCfg<HDP>;
  constexpr int BM = Cfg::kBM, BN = Cfg::kBN, SROW = Cfg::kSrow, TILE = Cfg::kTile;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __nv_bfloat16* sK = reinterpret_cast<__nv_bfloat16*>(smem_raw);  // [2][BN][SROW]
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

  // Prologue: Q (into sK[1]) and key tile 0, one group.
  load_tile<BM, HDP>(sK + TILE, gq, ld, q0, T, hd_chunks);
  load_tile<BN, HDP>(sK, gk, ld, 0, T, hd_chunks);
  load_tile<BN, HDP>(sV, gv, ld, 0, T, hd_chunks);
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();
  uint32_t qf[HDP / 16][4];
#pragma unroll
  for (int ks = 0; ks < HDP / 16; ++ks) ldsm_a<SROW>(qf[ks], sK + TILE, warp * 16, ks * 16, lane);
  __syncthreads();  // sK[1] is free for key tile 1

  float o[HDP / 8][4];
#pragma unroll
  for (int dt = 0; dt < HDP / 8; ++dt) o[dt][0] = o[dt][1] = o[dt][2] = o[dt][3] = 0.f;
  float m[2] = {-INFINITY, -INFINITY};  // running max of the raw scores q.k, rows g and g+8
  float l[2] = {0.f, 0.f};              // this lane's part of the running sum (its 2 columns/8)

  for (int j = 0; j < n_kt; ++j) {
    const int st = j & 1;
    if (j + 1 < n_kt) {  // prefetch tile j+1 into the other stage (freed by the last barrier)
      load_tile<BN, HDP>(sK + (st ^ 1) * TILE, gk, ld, (j + 1) * BN, T, hd_chunks);
      load_tile<BN, HDP>(sV + (st ^ 1) * TILE, gv, ld, (j + 1) * BN, T, hd_chunks);
      cp_async_commit();
      cp_async_wait<1>();  // tile j's group is complete
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();  // every thread's copies of tile j are visible
    const __nv_bfloat16* k_s = sK + st * TILE;
    const __nv_bfloat16* v_s = sV + st * TILE;

    // S = Q K^T for this warp's 16 rows x 64 keys: s[nt] = keys 8nt..8nt+7 of the tile.
    float s[BN / 8][4];
#pragma unroll
    for (int nt = 0; nt < BN / 8; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
#pragma unroll
    for (int ks = 0; ks < HDP / 16; ++ks) {
#pragma unroll
      for (int jj = 0; jj < BN / 16; ++jj) {
        uint32_t kb[4];
        ldsm_bn<SROW>(kb, k_s, jj * 16, ks * 16, lane);
        mma16816(s[2 * jj], qf[ks], kb[0], kb[1]);
        mma16816(s[2 * jj + 1], qf[ks], kb[2], kb[3]);
      }
    }
    if (j == qt) {  // diagonal tile: key > query -> -inf (this also drops keys >= T)
#pragma unroll
      for (int nt = 0; nt < BN / 8; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e)
          if (j * BN + nt * 8 + 2 * tq + (e & 1) > row0 + (e >> 1) * 8) s[nt][e] = -INFINITY;
    }

    // Online softmax: new row max (over the quad's 4 lanes), rescale l and O, p = exp(s - m).
    float mx[2] = {m[0], m[1]};
#pragma unroll
    for (int nt = 0; nt < BN / 8; ++nt) {
      mx[0] = fmaxf(mx[0], fmaxf(s[nt][0], s[nt][1]));
      mx[1] = fmaxf(mx[1], fmaxf(s[nt][2], s[nt][3]));
    }
    float corr[2], msc[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
      // Every row has seen key 0 by tile 0, so mx is finite; the guard keeps exp2 away from
      // (-inf) - (-inf) all the same.
      msc[r] = mx[r] == -INFINITY ? 0.f : mx[r] * scale_log2;
      corr[r] = exp2f(m[r] * scale_log2 - msc[r]);  // m = -inf (first tile) -> 0
      m[r] = mx[r];
      l[r] *= corr[r];
    }
#pragma unroll
    for (int nt = 0; nt < BN / 8; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        s[nt][e] = exp2f(fmaf(s[nt][e], scale_log2, -msc[e >> 1]));  // -inf -> 0
        l[e >> 1] += s[nt][e];
      }
    }
#pragma unroll
    for (int dt = 0; dt < HDP / 8; ++dt) {
      o[dt][0] *= corr[0];
      o[dt][1] *= corr[0];
      o[dt][2] *= corr[1];
      o[dt][3] *= corr[1];
    }

    // O += P V: P (bf16) straight from the S registers, V through ldmatrix.trans.
    mma_strip_times_tile<BN, HDP, SROW>(o, s, v_s, lane);
    __syncthreads();  // all warps are done with stage st before it is refilled
  }

  // Epilogue: full row sums, O / l -> bf16 through sK[0], lse = m * scale + log(l).
  float inv[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
    inv[r] = 1.f / l[r];  // l >= 1: the max element contributes exp(0)
  }
  stage_strip<HDP>(sK, warp * 16, o, inv[0], inv[1], lane);
  if (tq == 0) {
    float* lse_bh = lse + int64_t(bh) * T;
    if (row0 < T) lse_bh[row0] = m[0] * scale + logf(l[0]);
    if (row0 + 8 < T) lse_bh[row0 + 8] = m[1] * scale + logf(l[1]);
  }
  __syncthreads();
  store_tile<BM, HDP>(out + int64_t(b) * T * C + int64_t(h) * hd, C, q0, T, hd_chunks, sK);
}

template <int HDP>
void launch_forward(__nv_bfloat16* out, float* lse, const __nv_bfloat16* qkv, int64_t B, int64_t T,
                    int64_t n_head, int64_t hd, cudaStream_t stream) {
  using Cfg = FwdCfg<HDP>;
  const auto kernel = attention_forward_kernel<HDP>;
  QUEST_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        int(Cfg::kSmem)));
  const double scale = 1.0 / std::sqrt(double(hd));
  const dim3 grid(unsigned(B * n_head), unsigned((T + Cfg::kBM - 1) / Cfg::kBM));
  kernel<<<grid, kThreads, Cfg::kSmem, stream>>>(out, lse, qkv, int(T), int(n_head), int(hd),
                                                 float(scale), float(scale * 1.4426950408889634));
  QUEST_CUDA_CHECK(cudaGetLastError());
}

// ---- argument checks (shared with the backward) ----------------------------------------------
void check_attention_args(const char* op, int64_t B, int64_t T, int64_t n_head, int64_t head_dim) {
  QUEST_CUDA_REQUIRE(B >= 0 && T >= 0 && n_head >= 0, op, ": bad shape B=", B, " T=", T,
                     " n_head=", n_head);
  QUEST_CUDA_REQUIRE(head_dim >= 8 && head_dim <= 128 && head_dim % 8 == 0, op, ": head_dim ",
                     head_dim, " is not supported on CUDA (a multiple of 8 from 8 to 128)");
  QUEST_CUDA_REQUIRE(T <= (int64_t{1} << 22), op, ": T=", T, " exceeds the supported 4194304");
  QUEST_CUDA_REQUIRE(B * n_head < (int64_t{1} << 31), op, ": B * n_head = ", B * n_head,
                     " exceeds 2^31 - 1");
  QUEST_CUDA_REQUIRE(3 * n_head * head_dim < (int64_t{1} << 31), op,
                     ": 3 * n_head * head_dim exceeds 2^31 - 1");
}

}  // namespace attn

void attention_forward(bf16* out, float* lse, const bf16* qkv, int64_t B, int64_t T, int64_t n_head,
                       int64_t head_dim, cudaStream_t stream) {
  attn::check_attention_args("attention_forward", B, T, n_head, head_dim);
  if (B * T * n_head == 0) return;
  QUEST_CUDA_REQUIRE(out && lse && qkv, "attention_forward: null pointer");
  QUEST_CUDA_REQUIRE(detail::aligned16(out) && detail::aligned16(qkv) && detail::aligned(lse, 4),
                     "attention_forward: qkv and out must be 16-byte aligned, lse 4-byte aligned");
  if (head_dim <= 64)
    attn::launch_forward<64>(out, lse, qkv, B, T, n_head, head_dim, stream);
  else
    attn::launch_forward<128>(out, lse, qkv, B, T, n_head, head_dim, stream);
}

}  // namespace quest::cuda
