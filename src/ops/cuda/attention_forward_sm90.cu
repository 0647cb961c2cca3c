// Causal attention forward for Hopper (sm_90a), FlashAttention-3 style: the same function as the
// mma.sync kernel (attention_forward.cu; scale, masking, lse convention), with the products on
// wgmma, the tiles brought in by TMA and the CTA split into a producer and two consumers.
//
// Kernel invariants (attention_forward_sm90_kernel; head_dim 128 only)
// - Work: tiles of 128 queries of one (batch, head); n_tiles = B n_head n_qt, n_qt = ceil(T/128).
//   Persistent grid of min(n_tiles, #SMs) CTAs, one per SM (192 KB of shared memory); CTA x takes
//   tiles i = x, x + G, x + 2G, ... (G = gridDim.x) in that order. Tile i belongs to head
//   bh = i / n_qt; its query tile is qt = n_qt - 1 - p in even rounds and p in odd ones, where
//   p = i % n_qt and the round is (bh n_qt) / G (taken at the head's first tile, so that the map
//   is a bijection): the tiles of a head run at about the same time (K, V from L2), and a CTA that
//   had a long tile in one round gets a short one in the next (causal work is qt + 1 key tiles).
//   Static: the result never depends on which CTA computed a tile.
// - Warpgroups: 0 = producer (setmaxnreg.dec; one thread issues every TMA load), 1 and 2 =
//   consumers (setmaxnreg.inc); consumer c owns query rows q0 + 64 c .. + 63 of each tile. The
//   roles are the two branches of one if/else; after the split no CTA-wide barrier is used.
// - Shared memory (1024-aligned, all tiles 128-byte swizzled by TMA, two 64-column slabs of 16 KB
//   each, see wgmma_bf16.cuh): Q buffers 0, 1 (32 KB each; tile number `it` of the CTA uses
//   buffer it % 2), K/V stages 0, 1 (K 32 KB then V 32 KB; key tile number g of the CTA, counted
//   over all its tiles, uses stage g % 2), then the mbarriers:
//     q_full[2] (1 arrival + 32 KB tx), q_empty[2] (2 arrivals: thread 0 of each consumer),
//     k_full[2], v_full[2] (1 arrival + 32 KB tx), kv_empty[2] (8 arrivals: lane 0 of each
//     consumer warp).
//   Buffer use n = it / 2 (stage use u = g / 2) completes phase n (u) of its barriers: waits use
//   parity n & 1 (u & 1); the producer waits for the previous use, parity (n - 1) & 1.
//   TMA fills rows >= T (and nothing else: head_dim is exactly 128) with zeros and counts the
//   whole box in the transaction bytes.
// - Consumer, per tile: key tiles j = 0 .. qt (keys 128 j ..; tile qt holds the diagonal and every
//   key >= T, so it alone is masked: key > query -> -inf). S = Q K^T: 8 wgmma m64n128k16 (SS,
//   K-major); online softmax in registers (fp32 running max m and sum l of each row, p =
//   2^(s scale log2e - m scale log2e)); P rounded to bf16 becomes the A operand in registers;
//   O += P V: 8 wgmma m64n128k16 (RS, V N-major). Pipelined as in FA3: S_j and P_{j-1} V_{j-1}
//   are issued back to back, the softmax of S_j runs while P_{j-1} V_{j-1} is in the tensor cores,
//   then O is rescaled. Stage g is released (kv_empty) once the wgmma reading it have completed.
//   Ping-pong (kPingPong, the default): the two consumers take turns issuing their wgmma batches
//   (named barriers 3 and 4), so that one's softmax overlaps the other's products (FA3's
//   inter-warpgroup schedule; measured 3% faster on the H100 at the 200M and 30M shapes).
//   Every row sees key 0 in its first key tile, so m is finite after it (rows >= T too: they see
//   zero-filled keys), and l >= 1.
// - L2 hints on the loads (default): Q evict-first (read once), K and V evict-last (re-read by the
//   head's other query tiles); measured 1.5% faster. At the 200M shape the kernel then moves its
//   337 MB (qkv in, out and lse out) at 2.37 TB/s, 83% of a device-to-device copy of as many
//   bytes (2.85 TB/s): it is bound by memory more than by the tensor cores.
// - Epilogue (per consumer): O / l -> bf16 into the consumer's own 64 rows of its Q buffer (every
//   wgmma that read them has completed: a named barrier of the consumer's 128 threads first), in
//   the 128-byte swizzled layout (4-byte writes, conflict-free); fence.proxy.async, named barrier,
//   thread 0 issues the TMA stores (two 64 x 64 boxes; TMA clips rows >= T). lse (rows < T) is
//   written directly: m scale + log(l). At the start of its next tile (or before exiting) thread 0
//   waits until those stores have read shared memory, then arrives on q_empty of that buffer.
// - Device code exists only in the sm_90a compilation (QUEST_WGMMA_BF16); elsewhere the kernel
//   body is empty and the host never launches it (attention_forward_sm90_available()).
#include "ops/cuda/attention_forward_sm90.h"

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "ops/cuda/attention_common.cuh"  // ex2, pack_bf16
#include "ops/cuda/common.cuh"            // QUEST_CUDA_REQUIRE, detail::aligned16
#include "ops/cuda/device_info.h"         // device_sm_count
#include "ops/cuda/hopper.cuh"      // mbarrier, TMA, fences, tensor_map_encoder
#include "ops/cuda/wgmma_bf16.cuh"

namespace quest::cuda::attn {
namespace {

constexpr int kHD = 128, kBM = 128;  // head dim, queries per tile
constexpr int kSlab = 128 * 128;         // bytes of one box: 128 rows x 64 bf16
constexpr int kTileBytes = 2 * kSlab;    // a Q, K or V tile: 128 rows x 128 bf16
constexpr int kKVOff = 2 * kTileBytes;   // after the two Q buffers
constexpr int kBarOff = kKVOff + 4 * kTileBytes;
constexpr int kSmem = kBarOff + 10 * 8 + 1024;  // + the barriers, + slack for the 1024 alignment
constexpr int kThreads = 384;
constexpr int kProducerRegs = 40, kConsumerRegs = 232;
static_assert(kProducerRegs * 128 + 2 * kConsumerRegs * 128 <= 65536, "register budget");

#if QUEST_WGMMA_BF16
using namespace ::quest::cuda::hopper;
using namespace ::quest::cuda::wg;

constexpr int kBN = 128;  // keys per tile

// Tile i -> (bh, qt); see the header comment.
__device__ __forceinline__ void decode_tile(int i, int n_qt, int G, int& bh, int& qt) {
  bh = i / n_qt;
  const int p = i - bh * n_qt;
  const int round = int((int64_t(bh) * n_qt) / G);
  qt = (round & 1) ? p : n_qt - 1 - p;
}

// Ping-pong between the consumers (kPingPong): consumer c issues its wgmma batches only on its
// turn (bar.sync 3 + c, 256 threads: its own 128 plus the other consumer's 128 arriving) and
// hands the turn over right after issuing (bar.arrive 3 + (1 - c)). Consumer 1 gives consumer 0
// the first turn; consumer 0 takes a last one at the end, so that every arrival is consumed.
__device__ __forceinline__ void pp_sync(int c) {
  if (c == 0)
    asm volatile("bar.sync 3, 256;" ::: "memory");
  else
    asm volatile("bar.sync 4, 256;" ::: "memory");
}
__device__ __forceinline__ void pp_arrive_other(int c) {
  if (c == 0)
    asm volatile("bar.arrive 4, 256;" ::: "memory");
  else
    asm volatile("bar.arrive 3, 256;" ::: "memory");
}

// S = Q K^T (64 x 128 keys). qs: the consumer's Q rows (slab 0); ks: the K tile.
__device__ __forceinline__ void issue_qk(float (&s)[64], uint32_t qs, uint32_t ks) {
  fence_operand(s);
  wgmma_fence();
#pragma unroll
  for (int kk = 0; kk < kHD / 16; ++kk) {
    const uint32_t off = uint32_t((kk >> 2) * kSlab + (kk & 3) * 32);
    wgmma_ss_m64n128k16(s, desc_kmajor(qs + off), desc_kmajor(ks + off), kk > 0 ? 1 : 0);
  }
  wgmma_commit();
}

// O (+)= P V (64 x 128); first: O = P V.
__device__ __forceinline__ void issue_pv(float (&o)[64], uint32_t (&p)[8][4], uint32_t vs,
                                         bool first) {
  fence_operand(o);
#pragma unroll
  for (int kk = 0; kk < 8; ++kk) fence_operand(p[kk]);
  wgmma_fence();
#pragma unroll
  for (int kk = 0; kk < kBN / 16; ++kk)
    wgmma_rs_m64n128k16_nmajor(o, p[kk], desc_nmajor(vs + uint32_t(kk) * 2048u, uint32_t(kSlab)),
                               (first && kk == 0) ? 0 : 1);
  wgmma_commit();
}

// Causal mask of the diagonal tile: key (local 8 j + 2 q + e % 2) > row (local rl0 or rl0 + 8).
__device__ __forceinline__ void mask_diag(float (&s)[64], int rl0, int q4) {
#pragma unroll
  for (int j = 0; j < 16; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e)
      if (8 * j + 2 * q4 + (e & 1) > rl0 + 8 * (e >> 1)) s[4 * j + e] = -INFINITY;
}

// Online softmax of one key tile: updates m, l; s becomes p (fp32); corr = the factor for O.
__device__ __forceinline__ void softmax_tile(float (&s)[64], float (&m)[2], float (&l)[2],
                                             float (&corr)[2], float scale_log2) {
  float mx[2] = {m[0], m[1]};
#pragma unroll
  for (int j = 0; j < 16; ++j) {
    mx[0] = fmaxf(mx[0], fmaxf(s[4 * j], s[4 * j + 1]));
    mx[1] = fmaxf(mx[1], fmaxf(s[4 * j + 2], s[4 * j + 3]));
  }
  float msc[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
    mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
    msc[r] = mx[r] * scale_log2;                   // finite: see the header comment
    corr[r] = ex2(fmaf(m[r], scale_log2, -msc[r]));  // m = -inf (first tile) -> 0
    m[r] = mx[r];
  }
  float sum[2] = {0.f, 0.f};
#pragma unroll
  for (int j = 0; j < 16; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      s[4 * j + e] = ex2(fmaf(s[4 * j + e], scale_log2, -msc[e >> 1]));  // -inf -> 0
      sum[e >> 1] += s[4 * j + e];
    }
  l[0] = l[0] * corr[0] + sum[0];
  l[1] = l[1] * corr[1] + sum[1];
}

__device__ __forceinline__ void pack_p(uint32_t (&p)[8][4], const float (&s)[64]) {
#pragma unroll
  for (int kk = 0; kk < 8; ++kk) {
    p[kk][0] = pack_bf16(s[8 * kk + 0], s[8 * kk + 1]);
    p[kk][1] = pack_bf16(s[8 * kk + 2], s[8 * kk + 3]);
    p[kk][2] = pack_bf16(s[8 * kk + 4], s[8 * kk + 5]);
    p[kk][3] = pack_bf16(s[8 * kk + 6], s[8 * kk + 7]);
  }
}
#endif  // QUEST_WGMMA_BF16

template <bool kPingPong>
__global__ void __launch_bounds__(kThreads, 1)
    attention_forward_sm90_kernel(const __grid_constant__ CUtensorMap map_qkv,
                                  const __grid_constant__ CUtensorMap map_out,
                                  float* __restrict__ lse, int T, int n_head, int n_qt,
                                  int n_tiles, float scale, float scale_log2,
                                  int l2_hints) {
#if QUEST_WGMMA_BF16
  extern __shared__ uint8_t smem_raw[];
  const uint32_t base = (smem_addr(smem_raw) + 1023u) & ~1023u;
  const uint32_t bars = base + kBarOff;
  auto q_full = [&](int b) { return bars + 8u * uint32_t(b); };
  auto q_empty = [&](int b) { return bars + 16u + 8u * uint32_t(b); };
  auto k_full = [&](int s) { return bars + 32u + 8u * uint32_t(s); };
  auto v_full = [&](int s) { return bars + 48u + 8u * uint32_t(s); };
  auto kv_empty = [&](int s) { return bars + 64u + 8u * uint32_t(s); };
  const int wgi = int(threadIdx.x) / 128, t = int(threadIdx.x) % 128;
  const int G = int(gridDim.x);
  const int C = n_head * kHD;

  if (threadIdx.x == 0) {
    for (int b = 0; b < 2; ++b) {
      mbar_init(q_full(b), 1);
      mbar_init(q_empty(b), 2);
      mbar_init(k_full(b), 1);
      mbar_init(v_full(b), 1);
      mbar_init(kv_empty(b), 8);
    }
    mbar_init_fence();
  }
  __syncthreads();

  if (wgi == 0) {
    // Producer: one thread issues every load, in the consumers' order.
    setmaxnreg_dec<kProducerRegs>();
    if (t == 0) {
      // L2 hints (l2_hints != 0): Q is read once (evict first); K and V are read by every query
      // tile of their head (evict last).
      const uint64_t pol_q = l2_policy(l2_hints ? 1 : 0), pol_kv = l2_policy(l2_hints ? 2 : 0);
      int it = 0, g = 0;
      for (int i = int(blockIdx.x); i < n_tiles; i += G, ++it) {
        int bh, qt;
        decode_tile(i, n_qt, G, bh, qt);
        const int b = bh / n_head, col = (bh % n_head) * kHD;
        const int qb = it & 1;
        if (it >= 2) mbar_wait(q_empty(qb), uint32_t((it >> 1) - 1) & 1u);
        const uint32_t qs = base + uint32_t(qb) * kTileBytes;
        mbar_expect_tx(q_full(qb), kTileBytes);
        tma_load_3d_hint(qs, &map_qkv, col, qt * kBM, b, q_full(qb), pol_q);
        tma_load_3d_hint(qs + kSlab, &map_qkv, col + 64, qt * kBM, b, q_full(qb), pol_q);
        for (int j = 0; j <= qt; ++j, ++g) {
          const int s = g & 1, u = g >> 1;
          if (u > 0) mbar_wait(kv_empty(s), uint32_t(u - 1) & 1u);
          const uint32_t ks = base + kKVOff + uint32_t(s) * 2u * kTileBytes, vs = ks + kTileBytes;
          mbar_expect_tx(k_full(s), kTileBytes);
          tma_load_3d_hint(ks, &map_qkv, C + col, j * kBN, b, k_full(s), pol_kv);
          tma_load_3d_hint(ks + kSlab, &map_qkv, C + col + 64, j * kBN, b, k_full(s), pol_kv);
          mbar_expect_tx(v_full(s), kTileBytes);
          tma_load_3d_hint(vs, &map_qkv, 2 * C + col, j * kBN, b, v_full(s), pol_kv);
          tma_load_3d_hint(vs + kSlab, &map_qkv, 2 * C + col + 64, j * kBN, b, v_full(s), pol_kv);
        }
      }
    }
  } else {
    setmaxnreg_inc<kConsumerRegs>();
    const int c = wgi - 1, warp = t / 32, lane = t % 32, g8 = lane / 4, q4 = lane % 4;
    const int r0 = 16 * warp + g8;  // the lane's rows r0, r0 + 8 of the consumer's 64
    auto kv_stage = [&](int s) { return base + kKVOff + uint32_t(s) * 2u * kTileBytes; };
    if (kPingPong && c == 1) pp_arrive_other(c);  // consumer 0 issues first
    int it = 0, g = 0;
    for (int i = int(blockIdx.x); i < n_tiles; i += G, ++it) {
      int bh, qt;
      decode_tile(i, n_qt, G, bh, qt);
      const int b = bh / n_head, col = (bh % n_head) * kHD, q0 = qt * kBM;
      const int qb = it & 1;
      if (it > 0 && t == 0) {  // the previous tile's O stores have read its Q buffer
        bulk_wait_read<0>();
        mbar_arrive(q_empty(qb ^ 1));
      }
      const uint32_t qs = base + uint32_t(qb) * kTileBytes + uint32_t(c) * 8192u;
      mbar_wait(q_full(qb), uint32_t(it >> 1) & 1u);

      float o[64], s[64];
      uint32_t p[8][4];
      float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f}, corr[2];

      // Key tile 0.
      int sp = g & 1;  // the stage whose P V is pending
      mbar_wait(k_full(sp), uint32_t(g >> 1) & 1u);
      if (kPingPong) pp_sync(c);
      issue_qk(s, qs, kv_stage(sp));
      if (kPingPong) pp_arrive_other(c);
      wgmma_wait<0>();
      fence_operand(s);
      if (qt == 0) mask_diag(s, 64 * c + r0, q4);
      softmax_tile(s, m, l, corr, scale_log2);
      pack_p(p, s);
      ++g;
      for (int j = 1; j <= qt; ++j, ++g) {
        const int st = g & 1;
        mbar_wait(k_full(st), uint32_t(g >> 1) & 1u);
        mbar_wait(v_full(sp), uint32_t((g - 1) >> 1) & 1u);
        if (kPingPong) pp_sync(c);
        issue_qk(s, qs, kv_stage(st));
        issue_pv(o, p, kv_stage(sp) + kTileBytes, j == 1);
        if (kPingPong) pp_arrive_other(c);
        wgmma_wait<1>();  // S_j
        fence_operand(s);
        if (j == qt) mask_diag(s, 64 * c + r0, q4);
        softmax_tile(s, m, l, corr, scale_log2);
        wgmma_wait<0>();  // P_{j-1} V_{j-1}
        fence_operand(o);
#pragma unroll
        for (int kk = 0; kk < 8; ++kk) fence_operand(p[kk]);
        if (lane == 0) mbar_arrive(kv_empty(sp));
#pragma unroll
        for (int jj = 0; jj < 16; ++jj) {
          o[4 * jj + 0] *= corr[0];
          o[4 * jj + 1] *= corr[0];
          o[4 * jj + 2] *= corr[1];
          o[4 * jj + 3] *= corr[1];
        }
        pack_p(p, s);
        sp = st;
      }
      mbar_wait(v_full(sp), uint32_t((g - 1) >> 1) & 1u);
      if (kPingPong) pp_sync(c);
      issue_pv(o, p, kv_stage(sp) + kTileBytes, qt == 0);
      if (kPingPong) pp_arrive_other(c);
      wgmma_wait<0>();
      fence_operand(o);
      if (lane == 0) mbar_arrive(kv_empty(sp));

      // Epilogue.
      float inv[2];
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
        inv[r] = 1.f / l[r];
      }
      named_barrier_sync(c);  // every warp's wgmma reading these Q rows has completed
#pragma unroll
      for (int j = 0; j < 16; ++j) {
        const uint32_t a = qs + uint32_t((j >> 3) * kSlab + r0 * 128 + (((j & 7) ^ g8) << 4) + 4 * q4);
        st_shared_b32(a, pack_bf16(o[4 * j] * inv[0], o[4 * j + 1] * inv[0]));
        st_shared_b32(a + 8 * 128, pack_bf16(o[4 * j + 2] * inv[1], o[4 * j + 3] * inv[1]));
      }
      if (q4 == 0) {
        const int row = q0 + 64 * c + r0;
        float* lse_bh = lse + int64_t(bh) * T;
        if (row < T) lse_bh[row] = m[0] * scale + logf(l[0]);
        if (row + 8 < T) lse_bh[row + 8] = m[1] * scale + logf(l[1]);
      }
      fence_proxy_async();
      named_barrier_sync(c);
      if (t == 0) {
        tma_store_3d(&map_out, qs, col, q0 + 64 * c, b);
        tma_store_3d(&map_out, qs + kSlab, col + 64, q0 + 64 * c, b);
        bulk_commit();
      }
    }
    if (kPingPong && c == 0) pp_sync(c);  // consumes consumer 1's last hand-over
    if (t == 0) bulk_wait_read<0>();  // shared memory must outlive the stores' reads
  }
#endif  // QUEST_WGMMA_BF16
}

// ---- host ------------------------------------------------------------------------------------
using hopper::kMaxDevices;

// [B][T][cols] bf16, row stride ld elements; box 64 columns (128 bytes) x box_rows x 1,
// 128-byte swizzle, rows past T read as zeros (and are clipped on stores).
CUtensorMap encode_map(const bf16* p, int64_t B, int64_t T, int64_t cols, int64_t ld,
                       int box_rows) {
  CUtensorMap map;
  std::memset(&map, 0, sizeof(map));
  const cuuint64_t dims[3] = {cuuint64_t(cols), cuuint64_t(T), cuuint64_t(B)};
  const cuuint64_t strides[2] = {cuuint64_t(ld) * sizeof(bf16), cuuint64_t(T * ld) * sizeof(bf16)};
  const cuuint32_t box[3] = {64, cuuint32_t(box_rows), 1};
  const cuuint32_t estrides[3] = {1, 1, 1};
  const CUresult r = hopper::tensor_map_encoder()(
      &map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 3, const_cast<bf16*>(p), dims, strides, box,
      estrides, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
      CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  QUEST_CUDA_REQUIRE(r == CUDA_SUCCESS, "attention_forward_sm90: cuTensorMapEncodeTiled failed (",
                     int(r), ") for B=", B, " T=", T, " cols=", cols);
  return map;
}

}  // namespace

bool attention_forward_sm90_available() {
  static std::atomic<int> state[hopper::kMaxDevices] = {};
  return hopper::sm90a_kernel_available(
      state, reinterpret_cast<const void*>(attention_forward_sm90_kernel<true>));
}

bool attention_forward_sm90_enabled() {
  static const bool env_on = [] {
    const char* e = std::getenv("QUEST_ATTN_SM90");
    return !(e != nullptr && std::strcmp(e, "0") == 0);
  }();
  return env_on && attention_forward_sm90_available();
}

void attention_forward_sm90(bf16* out, float* lse, const bf16* qkv, int64_t B, int64_t T,
                            int64_t n_head, int64_t head_dim, cudaStream_t stream,
                            Sm90Variant variant) {
  QUEST_CUDA_REQUIRE(head_dim == kHD, "attention_forward_sm90: head_dim ", head_dim,
                     " (only 128)");
  QUEST_CUDA_REQUIRE(attention_forward_sm90_available(),
                     "attention_forward_sm90: the device is not sm_90 or the binary lacks sm_90a code");
  if (B * T * n_head == 0) return;
  QUEST_CUDA_REQUIRE(detail::aligned16(out) && detail::aligned16(qkv) && detail::aligned(lse, 4),
                     "attention_forward_sm90: qkv and out must be 16-byte aligned, lse 4-byte aligned");
  int dev = 0;
  QUEST_CUDA_CHECK(cudaGetDevice(&dev));
  static std::atomic<bool> attr_set[kMaxDevices] = {};
  const int d = dev % kMaxDevices;
  if (!attr_set[d].load(std::memory_order_acquire)) {
    QUEST_CUDA_CHECK(cudaFuncSetAttribute(attention_forward_sm90_kernel<true>,
                                          cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
    QUEST_CUDA_CHECK(cudaFuncSetAttribute(attention_forward_sm90_kernel<false>,
                                          cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
    attr_set[d].store(true, std::memory_order_release);
  }
  const int n_sm = device_sm_count(dev);
  const int64_t C = n_head * kHD;
  const int64_t n_qt = (T + kBM - 1) / kBM, n_tiles = B * n_head * n_qt;
  QUEST_CUDA_REQUIRE(n_tiles < (int64_t{1} << 31), "attention_forward_sm90: ", n_tiles,
                     " tiles exceed 2^31 - 1");
  const CUtensorMap map_qkv = encode_map(qkv, B, T, 3 * C, 3 * C, kBM);
  const CUtensorMap map_out = encode_map(out, B, T, C, C, 64);
  const int grid = int(std::min<int64_t>(n_tiles, n_sm));
  const double scale = 1.0 / std::sqrt(double(head_dim));
  const auto kernel = variant == Sm90Variant::kNoPingPong ? attention_forward_sm90_kernel<false>
                                                          : attention_forward_sm90_kernel<true>;
  kernel<<<grid, kThreads, kSmem, stream>>>(
      map_qkv, map_out, lse, int(T), int(n_head), int(n_qt), int(n_tiles), float(scale),
      float(scale * 1.4426950408889634), variant == Sm90Variant::kNoL2Hints ? 0 : 1);
  QUEST_CUDA_CHECK(cudaGetLastError());
}

}  // namespace quest::cuda::attn
