// Causal attention forward, flash-attention style (FlashAttention-2's forward algorithm): for
// each block of 128 queries, the key/value tiles stream through shared memory; the scores
// S = q k^T (tensor cores, fp32 accumulation) stay in registers, an online softmax keeps each
// row's running max m and sum l (fp32), and O accumulates P V in registers. The T x T scores
// never reach memory. lse = m * scale + log(l) (natural log of the scaled scores) is saved for
// the backward pass. Fragment layouts, ldmatrix patterns and the shared-row padding: see
// attention_common.cuh.
#include <cmath>

#include "ops/cuda/attention_common.cuh"
#include "ops/cuda/attention_forward_sm90.h"  // the Hopper kernel (dispatch below)
#include "ops/cuda/common.cuh"  // QUEST_CUDA_REQUIRE (quest::Error without core/error.h's fmt)
#include "ops/cuda_ops.h"

namespace quest::cuda {
namespace attn {

// ---- kernel ----------------------------------------------------------------------------------
// Grid B * n_head * n_qt (n_qt = ceil(T / 128)); block 128 threads = 4 warps, 2 blocks per SM.
// Block x owns (batch, head) bh = x / n_qt and the query tile qt = n_qt - 1 - x % n_qt, rows
// q0 = 128 qt .. q0 + 127: the tiles of one head are neighbours in launch order, so they run at
// the same time and read that head's K and V from L2 rather than each from DRAM, and within a
// head the longest rows start first (causal work grows with qt).
// Warp w owns two m16 strips, strip st = rows q0 + 64 st + 16 w .. + 15, and everything computed
// for them: S and P (registers, 64 keys at a time), the running m and l of its rows and
// O[16][HDP] per strip (fp32 registers). Two strips per warp let every K and V fragment read from
// shared memory feed two mma (half the ldmatrix traffic of one strip per warp), and the
// interleaved rows give every warp the same causal work. Lane (g, q) holds rows g and g+8 of each
// strip (see the C layout).
// Key tiles j = 0 .. min(2 qt + 2, ceil(T / 64)) - 1 of 64 keys. Tile j needs the causal mask
// for strip st when its last key passes the strip's first row; in tile 2 qt + 1 (keys q0 + 64 ..)
// strip 0 (rows < q0 + 64) sees no key at all and is skipped (fwd_tile<1>). (Templating the
// unmasked tiles apart, which drops the mask's selects from them, made ptxas spill more and the
// kernel 3% slower.) The mask also removes keys >= T for every valid query; every processed row
// sees at least one key (its own tile's diagonal or key 0), so the running max is finite after
// the first tile.
// Q stays in shared memory (A fragments re-read per key tile: two strips of Q fragments would not
// fit in registers next to O and S).
// Shared memory, HDP + 8 bf16 per row: sQ[128][SROW], sKV[2 stages][K, V][64][SROW]. One barrier
// per key tile: after it, tile j has landed and every warp is done with tile j - 1, whose stage
// then receives tile j + 1 (cp.async, overlapping the products of tile j). The final O tile is
// staged through sQ (each warp overwrites only the rows it alone read) for 16-byte stores.
// Rows >= T and columns >= head_dim are zero-filled in shared memory, so padded keys and
// columns add exact zeros; outputs are stored only for rows < T and columns < head_dim.
template <int HDP>
struct FwdCfg {
  static constexpr int kWarps = 4, kThreads = 32 * kWarps, kStrips = 2;
  static constexpr int kBM = 16 * kWarps * kStrips, kBN = 64, kBS = 64, kSrow = Tile<HDP>::kSrow;
  static constexpr int kKV = kBN * kSrow;  // bf16 per K or V stage
  static constexpr size_t kSmem = (size_t(kBM) * kSrow + 4 * size_t(kKV)) * sizeof(__nv_bfloat16);
  static_assert(kBM == 2 * kBN, "key tiles 2 qt and 2 qt + 1 are the diagonal ones");
};

// One key tile for strips S0..1 of warp `warp` (S0 = 1: strip 0 has no key in this tile), in
// softmax steps of kBS keys (S of both strips: kBS registers next to the 128 of O at head_dim
// 128; ptxas spilled least with the whole tile in one step).
// key0: the tile's first key; q0: the block's first query.
// q_a: sQ's shared address + lane_a + the warp's row offset (16 warp rows); k_n, v_a: the K and
// V tiles' shared addresses + lane_n and lane_a.
template <int HDP, int S0>
__device__ __forceinline__ void fwd_tile(float (&o)[2][HDP / 8][4], float (&m)[2][2],
                                         float (&l)[2][2], uint32_t q_a, uint32_t k_n, uint32_t v_a,
                                         int q0, int key0, int warp, int lane, float scale_log2) {
  using Cfg = FwdCfg<HDP>;
  constexpr int BS = Cfg::kBS, SROW = Cfg::kSrow;
  const int g = lane >> 2, tq = lane & 3;

#pragma unroll
  for (int k1 = 0; k1 < Cfg::kBN; k1 += BS) {  // the step's first key in the tile
    // S = Q K^T for the strips' 16 rows x 32 keys: s[st][nt] = keys k1 + 8nt .. + 7.
    float s[2][BS / 8][4];
#pragma unroll
    for (int st = S0; st < 2; ++st)
#pragma unroll
      for (int nt = 0; nt < BS / 8; ++nt) s[st][nt][0] = s[st][nt][1] = s[st][nt][2] = s[st][nt][3] = 0.f;
#pragma unroll
    for (int ks = 0; ks < HDP / 16; ++ks) {
      uint32_t qa[2][4];
#pragma unroll
      for (int st = S0; st < 2; ++st) ldsm_a<SROW>(qa[st], q_a, 64 * st, ks * 16);
#pragma unroll
      for (int jj = 0; jj < BS / 16; ++jj) {
        uint32_t kb[4];
        ldsm_bn<SROW>(kb, k_n, k1 + jj * 16, ks * 16);
#pragma unroll
        for (int st = S0; st < 2; ++st) {
          mma16816(s[st][2 * jj], qa[st], kb[0], kb[1]);
          mma16816(s[st][2 * jj + 1], qa[st], kb[2], kb[3]);
        }
      }
    }

    // Per strip: causal mask, online softmax (new row max over the quad's 4 lanes, rescale l and
    // O, p = 2^(s scale log2e - m scale log2e)), P rounded to bf16 A fragments.
    uint32_t pa[2][BS / 16][4];
#pragma unroll
    for (int st = S0; st < 2; ++st) {
      const int r0 = q0 + 64 * st + 16 * warp;  // the strip's first row
      const int kb0 = key0 + k1;                // the step's first key
      if (kb0 + BS - 1 > r0) {                  // some key passes some row: key > row -> -inf
#pragma unroll
        for (int nt = 0; nt < BS / 8; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e)
            if (kb0 + nt * 8 + 2 * tq + (e & 1) > r0 + g + (e >> 1) * 8) s[st][nt][e] = -INFINITY;
      }
      float mx[2] = {m[st][0], m[st][1]};
#pragma unroll
      for (int nt = 0; nt < BS / 8; ++nt) {
        mx[0] = fmaxf(mx[0], fmaxf(s[st][nt][0], s[st][nt][1]));
        mx[1] = fmaxf(mx[1], fmaxf(s[st][nt][2], s[st][nt][3]));
      }
      float corr[2], msc[2];
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
        // A row whose keys are all masked so far keeps mx = -inf (key 0 comes in the first step,
        // so not for long); the guard keeps (-inf) - (-inf) away: p = 0 and corr = 0 * 0 there.
        msc[r] = mx[r] == -INFINITY ? 0.f : mx[r] * scale_log2;
        corr[r] = ex2(m[st][r] * scale_log2 - msc[r]);  // m = -inf (nothing seen yet) -> 0
        m[st][r] = mx[r];
        l[st][r] *= corr[r];
      }
#pragma unroll
      for (int nt = 0; nt < BS / 8; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          s[st][nt][e] = ex2(fmaf(s[st][nt][e], scale_log2, -msc[e >> 1]));  // -inf -> 0
          l[st][e >> 1] += s[st][nt][e];
        }
      }
#pragma unroll
      for (int kk = 0; kk < BS / 16; ++kk) a_frag_from_c(pa[st][kk], s[st][2 * kk], s[st][2 * kk + 1]);
#pragma unroll
      for (int dt = 0; dt < HDP / 8; ++dt) {
        o[st][dt][0] *= corr[0];
        o[st][dt][1] *= corr[0];
        o[st][dt][2] *= corr[1];
        o[st][dt][3] *= corr[1];
      }
    }

    // O += P V: V through ldmatrix.trans, each fragment used by both strips.
#pragma unroll
    for (int kk = 0; kk < BS / 16; ++kk) {
#pragma unroll
      for (int dd = 0; dd < HDP / 16; ++dd) {
        uint32_t vb[4];
        ldsm_bk<SROW>(vb, v_a, k1 + kk * 16, dd * 16);
#pragma unroll
        for (int st = S0; st < 2; ++st) {
          mma16816(o[st][2 * dd], pa[st][kk], vb[0], vb[1]);
          mma16816(o[st][2 * dd + 1], pa[st][kk], vb[2], vb[3]);
        }
      }
    }
  }
}

template <int HDP>
__global__ void __launch_bounds__(FwdCfg<HDP>::kThreads, 2) attention_forward_kernel(
    __nv_bfloat16* __restrict__ out, float* __restrict__ lse, const __nv_bfloat16* __restrict__ qkv,
    int T, int n_head, int hd, float scale, float scale_log2) {
  using Cfg = FwdCfg<HDP>;
  constexpr int BM = Cfg::kBM, BN = Cfg::kBN, SROW = Cfg::kSrow, KV = Cfg::kKV, NT = Cfg::kThreads;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __nv_bfloat16* sQ = reinterpret_cast<__nv_bfloat16*>(smem_raw);  // [BM][SROW]
  __nv_bfloat16* sKV = sQ + BM * SROW;                              // [2][K, V][BN][SROW]

  const int n_qt = (T + BM - 1) / BM;
  const int bh = int(blockIdx.x) / n_qt, b = bh / n_head, h = bh % n_head;
  const int qt = n_qt - 1 - int(blockIdx.x) % n_qt;
  const int q0 = qt * BM;
  const int n_kt = min(2 * qt + 2, (T + BN - 1) / BN);
  const int64_t C = int64_t(n_head) * hd, ld = 3 * C;
  const __nv_bfloat16* gq = qkv + int64_t(b) * T * ld + int64_t(h) * hd;
  const __nv_bfloat16* gk = gq + C;
  const __nv_bfloat16* gv = gq + 2 * C;
  const int hd_chunks = hd / 8;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane >> 2, tq = lane & 3;

  // Prologue: Q and key tile 0, one group.
  load_tile<BM, HDP, NT>(sQ, gq, ld, q0, T, hd_chunks);
  load_tile<BN, HDP, NT>(sKV, gk, ld, 0, T, hd_chunks);
  load_tile<BN, HDP, NT>(sKV + KV, gv, ld, 0, T, hd_chunks);
  cp_async_commit();

  float o[2][HDP / 8][4];
#pragma unroll
  for (int st = 0; st < 2; ++st)
#pragma unroll
    for (int dt = 0; dt < HDP / 8; ++dt) o[st][dt][0] = o[st][dt][1] = o[st][dt][2] = o[st][dt][3] = 0.f;
  float m[2][2] = {{-INFINITY, -INFINITY}, {-INFINITY, -INFINITY}};  // running max of q.k
  float l[2][2] = {{0.f, 0.f}, {0.f, 0.f}};  // this lane's part of the running sum (2 columns/8)

  const uint32_t q_a = smem_addr(sQ) + lane_a<SROW>(lane) + tile_off<SROW>(16 * warp, 0);
  const uint32_t kv_base = smem_addr(sKV);
  for (int j = 0; j < n_kt; ++j) {
    cp_async_wait<0>();  // tile j (the only group in flight) has landed for this thread
    __syncthreads();     // ... for every thread; and every warp is done with tile j - 1
    const uint32_t k_s = kv_base + (j & 1) * (2 * KV * 2);  // this stage's K tile; V follows
    if (j + 1 < n_kt) {  // tile j + 1 into the stage that tile j - 1 used
      __nv_bfloat16* nxt = sKV + ((j + 1) & 1) * 2 * KV;
      load_tile<BN, HDP, NT>(nxt, gk, ld, (j + 1) * BN, T, hd_chunks);
      load_tile<BN, HDP, NT>(nxt + KV, gv, ld, (j + 1) * BN, T, hd_chunks);
      cp_async_commit();
    }
    const uint32_t k_n = k_s + lane_n<SROW>(lane), v_a = k_s + KV * 2 + lane_a<SROW>(lane);
    if (j == 2 * qt + 1)
      fwd_tile<HDP, 1>(o, m, l, q_a, k_n, v_a, q0, j * BN, warp, lane, scale_log2);
    else
      fwd_tile<HDP, 0>(o, m, l, q_a, k_n, v_a, q0, j * BN, warp, lane, scale_log2);
  }

  // Epilogue: full row sums, O / l -> bf16 into the warp's own rows of sQ, lse = m scale + log l.
  __syncwarp();
  float* lse_bh = lse + int64_t(bh) * T;
#pragma unroll
  for (int st = 0; st < 2; ++st) {
    float inv[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      l[st][r] += __shfl_xor_sync(0xffffffffu, l[st][r], 1);
      l[st][r] += __shfl_xor_sync(0xffffffffu, l[st][r], 2);
      inv[r] = 1.f / l[st][r];  // l >= 1: the max element contributes 2^0
    }
    stage_frags<SROW, HDP / 8>(sQ, 64 * st + 16 * warp, 0, o[st], inv[0], inv[1], lane);
    const int row = q0 + 64 * st + 16 * warp + g;
    if (tq == 0) {
      if (row < T) lse_bh[row] = m[st][0] * scale + logf(l[st][0]);
      if (row + 8 < T) lse_bh[row + 8] = m[st][1] * scale + logf(l[st][1]);
    }
  }
  __syncthreads();
  store_tile<BM, HDP, NT>(out + int64_t(b) * T * C + int64_t(h) * hd, C, q0, T, hd_chunks, sQ);
}

template <int HDP>
void launch_forward(__nv_bfloat16* out, float* lse, const __nv_bfloat16* qkv, int64_t B, int64_t T,
                    int64_t n_head, int64_t hd, cudaStream_t stream) {
  using Cfg = FwdCfg<HDP>;
  const auto kernel = attention_forward_kernel<HDP>;
  QUEST_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        int(Cfg::kSmem)));
  const double scale = 1.0 / std::sqrt(double(hd));
  const int64_t blocks = B * n_head * ((T + Cfg::kBM - 1) / Cfg::kBM);
  QUEST_CUDA_REQUIRE(blocks < (int64_t{1} << 31), "attention_forward: B * n_head * ceil(T / ",
                     Cfg::kBM, ") = ", blocks, " exceeds 2^31 - 1");
  kernel<<<unsigned(blocks), Cfg::kThreads, Cfg::kSmem, stream>>>(out, lse, qkv, int(T), int(n_head), int(hd),
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

void attention_forward_mma(bf16* out, float* lse, const bf16* qkv, int64_t B, int64_t T,
                           int64_t n_head, int64_t head_dim, cudaStream_t stream) {
  if (B * T * n_head == 0) return;
  if (head_dim <= 64)
    launch_forward<64>(out, lse, qkv, B, T, n_head, head_dim, stream);
  else
    launch_forward<128>(out, lse, qkv, B, T, n_head, head_dim, stream);
}

}  // namespace attn

void attention_forward(bf16* out, float* lse, const bf16* qkv, int64_t B, int64_t T, int64_t n_head,
                       int64_t head_dim, cudaStream_t stream) {
  attn::check_attention_args("attention_forward", B, T, n_head, head_dim);
  if (B * T * n_head == 0) return;
  QUEST_CUDA_REQUIRE(out && lse && qkv, "attention_forward: null pointer");
  QUEST_CUDA_REQUIRE(detail::aligned16(out) && detail::aligned16(qkv) && detail::aligned(lse, 4),
                     "attention_forward: qkv and out must be 16-byte aligned, lse 4-byte aligned");
  // Hopper: the wgmma kernel (attention_forward_sm90.cu) for head_dim 128, unless
  // QUEST_ATTN_SM90=0.
  if (head_dim == 128 && attn::attention_forward_sm90_enabled())
    attn::attention_forward_sm90(out, lse, qkv, B, T, n_head, head_dim, stream);
  else
    attn::attention_forward_mma(out, lse, qkv, B, T, n_head, head_dim, stream);
}

}  // namespace quest::cuda
