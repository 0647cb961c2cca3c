// Rotary position embedding on adjacent pairs (2i, 2i+1) of each head of q and k, in place, as
// cpu::rope_forward / rope_backward. The angle pos * theta^(-2i/head_dim) is formed in double (the
// frequencies come from the host in double), reduced to [-pi, pi] in double, and only then taken
// to float for sincosf, so long positions keep the low-frequency pairs' phase as on the CPU (cos
// and sin agree with the CPU's double ones rounded to float within an ulp or two) without double
// transcendentals on the device; the rotation itself is fp32 with one bf16 rounding per value.
//
// That angle costs a double multiply-reduce and a sincosf per pair, far more than the 8 bytes the
// pair moves: computed per pair (rope_kernel below, kept as the reference and the fallback) a call
// at 200M ran at 65% of a copy's speed. So the cos/sin are computed once, by the same expression,
// into a device table [position][head_dim / 2] of float2 (cos, sin) per (device, head_dim, theta),
// covering positions [0, capacity); pos0 only offsets into it. The rotation kernels then only
// stream qkv and read the table (L2/L1 resident: 256 KiB at T = 512, head_dim = 128), so the
// outputs are bit for bit the per-pair kernel's (same floats, same fp32 expressions).
#include <cmath>
#include <mutex>
#include <vector>

#include "ops/cuda/common.cuh"

namespace quest::cuda {
namespace {

using namespace detail;

constexpr int kMaxPairs = 512;  // head_dim <= 1024
constexpr double kTwoPi = 6.283185307179586476925286766559;
// theta^(-2i/head_dim) for pair i of the current call, written before each launch (stream order).
__device__ double g_inv_freq[kMaxPairs];

// ---- per-pair angles: the reference, and the fallback where no table can be used ---------------
// 256-thread blocks, grid-stride over B*T rows x (2C / VEC) groups of the row's q|k part (its first
// 2C values; v is never touched). A thread owns VEC consecutive values = VEC/2 whole pairs
// (VEC = 8: one 16-byte access, needs C % 8 == 0 and a 16-byte aligned qkv; VEC = 2: one pair).
// Pair column j (even, relative to the row's start) is pair i = (j % head_dim) / 2 of its head,
// since q and k heads both start at multiples of head_dim. sign = +1 rotates, -1 inverts.
template <int VEC>
__global__ void rope_kernel(bf16* qkv, int64_t BT, int64_t T, int64_t C, int64_t head_dim,
                            int64_t pos0, float sign) {
  const int64_t groups = 2 * C / VEC, items = BT * groups;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t it = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; it < items; it += stride) {
    const int64_t row = it / groups, j0 = (it - row * groups) * VEC;
    const double pos = double(pos0 + row % T);
    bf16* p = qkv + row * 3 * C + j0;
    float f[VEC];
    load<VEC>(p, f);
#pragma unroll
    for (int k = 0; k < VEC; k += 2) {
      const int64_t i = ((j0 + k) % head_dim) / 2;
      const double angle = pos * g_inv_freq[i];
      const float reduced = float(angle - kTwoPi * rint(angle * (1.0 / kTwoPi)));
      float sf, c;
      sincosf(reduced, &sf, &c);
      const float s = sign * sf;
      const float x0 = f[k], x1 = f[k + 1];
      f[k] = x0 * c - x1 * s;
      f[k + 1] = x1 * c + x0 * s;
    }
    store<VEC>(p, f);
  }
}

void check_args(int64_t B, int64_t T, int64_t n_head, int64_t head_dim, float theta, const char* op) {
  QUEST_CUDA_REQUIRE(B >= 0 && T >= 0 && n_head >= 0 && head_dim > 0 && head_dim % 2 == 0, op,
                     ": bad shape B=", B, " T=", T, " n_head=", n_head, " head_dim=", head_dim,
                     " (head_dim must be even)");
  QUEST_CUDA_REQUIRE(theta > 0.0f, op, ": theta must be positive, got ", theta);
  QUEST_CUDA_REQUIRE(head_dim / 2 <= kMaxPairs, op, ": head_dim ", head_dim, " exceeds ", 2 * kMaxPairs);
}

// The CPU's frequencies, in double, into `out` (head_dim / 2 values).
void inv_freq(double* out, int64_t head_dim, float theta) {
  const double log_theta = std::log(double(theta));
  for (int64_t i = 0; i < head_dim / 2; ++i)
    out[i] = std::exp(-double(2 * i) / double(head_dim) * log_theta);
}

void rope_per_pair(bf16* qkv, int64_t B, int64_t T, int64_t n_head, int64_t head_dim, float theta,
                   int64_t pos0, float sign, const char* op, cudaStream_t stream) {
  const int64_t C = n_head * head_dim, BT = B * T;
  if (BT == 0 || C == 0) return;
  // A static host copy keeps the asynchronous copy's source alive (every call writes the same
  // values for the same head_dim and theta).
  static thread_local double freq[kMaxPairs];
  inv_freq(freq, head_dim, theta);
  check(cudaMemcpyToSymbolAsync(g_inv_freq, freq, sizeof(double) * size_t(head_dim / 2), 0,
                                cudaMemcpyHostToDevice, stream),
        "rope frequencies", __FILE__, __LINE__);
  if (C % 8 == 0 && aligned16(qkv))
    rope_kernel<8><<<grid_for(BT * 2 * C / 8, 256), 256, 0, stream>>>(qkv, BT, T, C, head_dim, pos0, sign);
  else
    rope_kernel<2><<<grid_for(BT * C, 256), 256, 0, stream>>>(qkv, BT, T, C, head_dim, pos0, sign);
  QUEST_CUDA_LAUNCH_CHECK(op);
}

// ---- the table ---------------------------------------------------------------------------------
// table[pos * half + i] = (cos, sin) of pair i at position pos, by exactly rope_kernel's
// expressions (the same double angle, reduction and float sincosf). One thread per entry.
__global__ void rope_table_kernel(float2* table, const double* freq, int64_t positions, int half) {
  const int64_t n = positions * half;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < n;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t pos_i = e / half;
    const int i = int(e - pos_i * half);
    const double pos = double(pos_i);
    const double angle = pos * freq[i];
    const float reduced = float(angle - kTwoPi * rint(angle * (1.0 / kTwoPi)));
    float sf, c;
    sincosf(reduced, &sf, &c);
    table[e] = make_float2(c, sf);
  }
}

// Tables are never freed or rewritten once published: a kernel of another stream, or a captured
// graph, may still read a superseded one (a key's table is replaced only by a larger one, so at
// most about twice the largest stays allocated per key; in training the key never changes).
struct RopeTable {
  int device;
  int64_t head_dim;
  float theta;
  int64_t positions;  // covers positions [0, positions)
  float2* table;
};

constexpr int64_t kMaxTableBytes = int64_t(64) << 20;  // beyond: per-pair angles (rope_kernel)

// The table for (current device, head_dim, theta) that covers positions [0, need), or null when
// there is none and none can be made now: during stream capture (no allocation or synchronization
// is allowed there; the first, uncaptured call of a shape builds it), or when it would be larger
// than kMaxTableBytes. A new table is computed on `stream` and the stream synchronized before the
// pointer is published, so every stream sees it complete (a one-off cost per key and size).
const float2* rope_table(int64_t head_dim, float theta, int64_t need, cudaStream_t stream) {
  static std::mutex mutex;
  static std::vector<RopeTable> tables;
  int device = 0;
  check(cudaGetDevice(&device), "cudaGetDevice", __FILE__, __LINE__);
  const std::lock_guard<std::mutex> lock(mutex);
  const RopeTable* best = nullptr;
  for (const RopeTable& t : tables)
    if (t.device == device && t.head_dim == head_dim && t.theta == theta && (!best || t.positions > best->positions))
      best = &t;
  if (best && best->positions >= need) return best->table;

  const int64_t half = head_dim / 2;
  int64_t positions = std::max<int64_t>(best ? 2 * best->positions : 64, 64);
  while (positions < need) positions *= 2;
  if (positions * half * int64_t(sizeof(float2)) > kMaxTableBytes) return nullptr;
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(stream, &capture) != cudaSuccess) {
    (void)cudaGetLastError();  // e.g. the legacy stream while another captures: not an error here
    return nullptr;
  }
  if (capture != cudaStreamCaptureStatusNone) return nullptr;

  // One allocation: the frequencies (double, first, 16-byte multiple) then the table.
  const size_t freq_bytes = (size_t(half) * sizeof(double) + 15) / 16 * 16;
  void* mem = nullptr;
  check(cudaMalloc(&mem, freq_bytes + size_t(positions * half) * sizeof(float2)), "rope table",
        __FILE__, __LINE__);
  double* freq = static_cast<double*>(mem);
  float2* table = reinterpret_cast<float2*>(static_cast<char*>(mem) + freq_bytes);
  std::vector<double> host_freq(static_cast<size_t>(half));
  inv_freq(host_freq.data(), head_dim, theta);
  check(cudaMemcpyAsync(freq, host_freq.data(), size_t(half) * sizeof(double), cudaMemcpyHostToDevice, stream),
        "rope frequencies", __FILE__, __LINE__);
  rope_table_kernel<<<grid_for(positions * half, 256), 256, 0, stream>>>(table, freq, positions, int(half));
  QUEST_CUDA_LAUNCH_CHECK("rope_table_kernel");
  check(cudaStreamSynchronize(stream), "rope table", __FILE__, __LINE__);
  tables.push_back({device, head_dim, theta, positions, table});
  return table;
}

// ---- rotation from the table -------------------------------------------------------------------
// Grid (ceil(B*T / ROWS), column blocks), blockDim.x threads over the row's units: with VEC = 8 a
// unit is 8 values (one 16-byte access; needs C % 8 == 0, head_dim % 8 == 0 so the 4 pairs are
// pairs i0..i0+3 of one head, and a 16-byte aligned qkv), with VEC = 2 one pair. A thread keeps
// its column for all ROWS rows of its block: the pair index is computed once (32-bit), and the
// ROWS loads are issued before any math (ROWS x 16 bytes in flight per thread). Position of row r:
// pos0 + r % T, stepped from the block's first row without a division per row.
template <int VEC, int ROWS>
__global__ void __launch_bounds__(512)
    rope_table_apply_kernel(bf16* qkv, const float2* __restrict__ table, int64_t BT, int T,
                            int64_t pos0, int C, int half, float sign) {
  const int units = 2 * C / VEC;
  const int u = blockIdx.y * blockDim.x + threadIdx.x;
  if (u >= units) return;
  const int j0 = u * VEC;               // column within the row's q|k part
  const int i0 = (j0 >> 1) % half;      // first pair of the unit within its head
  const int64_t row0 = int64_t(blockIdx.x) * ROWS;
  int t = int(row0 % T);
  bf16* base = qkv + row0 * 3 * C + j0;

  float f[ROWS][VEC];
#pragma unroll
  for (int r = 0; r < ROWS; ++r)
    if (row0 + r < BT) load<VEC>(base + int64_t(r) * 3 * C, f[r]);
#pragma unroll
  for (int r = 0; r < ROWS; ++r) {
    if (row0 + r < BT) {
      const float2* cs = table + (pos0 + t) * half + i0;
      float c[VEC / 2], s[VEC / 2];
      if constexpr (VEC == 8) {
        const float4 a = __ldg(reinterpret_cast<const float4*>(cs));
        const float4 b = __ldg(reinterpret_cast<const float4*>(cs) + 1);
        c[0] = a.x, s[0] = a.y, c[1] = a.z, s[1] = a.w, c[2] = b.x, s[2] = b.y, c[3] = b.z, s[3] = b.w;
      } else {
        const float2 a = __ldg(cs);
        c[0] = a.x, s[0] = a.y;
      }
#pragma unroll
      for (int k = 0; k < VEC / 2; ++k) {
        // rope_kernel's operations and roundings. nvcc contracts its x1 * c + x0 * s to
        // fma(c, x1, x0 * s) (PTX), but in this loop it chose fma(s, x0, x1 * c), which rounds
        // differently about once in 10^5 values (seen on the H100): so that one is spelled out.
        // x0 * c - x1 * s stays as written: both kernels emit the same mul, mul, sub for it.
        const float sk = sign * s[k], ck = c[k];
        const float x0 = f[r][2 * k], x1 = f[r][2 * k + 1];
        f[r][2 * k] = x0 * ck - x1 * sk;
        f[r][2 * k + 1] = __fmaf_rn(ck, x1, __fmul_rn(x0, sk));
      }
      store<VEC>(base + int64_t(r) * 3 * C, f[r]);
    }
    if (++t == T) t = 0;
  }
}

template <int VEC, int ROWS>
void launch_table_apply(bf16* qkv, const float2* table, int64_t BT, int64_t T, int64_t pos0,
                        int64_t C, int64_t half, float sign, cudaStream_t stream) {
  const int64_t units = 2 * C / VEC;
  const int threads = int(std::min<int64_t>((units + 31) / 32 * 32, 512));
  const dim3 grid(unsigned((BT + ROWS - 1) / ROWS), unsigned((units + threads - 1) / threads));
  rope_table_apply_kernel<VEC, ROWS><<<grid, threads, 0, stream>>>(qkv, table, BT, int(T), pos0, int(C),
                                                                   int(half), sign);
}

void rope_apply(bf16* qkv, int64_t B, int64_t T, int64_t n_head, int64_t head_dim, float theta,
                int64_t pos0, float sign, const char* op, cudaStream_t stream, int rows = 2) {
  check_args(B, T, n_head, head_dim, theta, op);
  const int64_t C = n_head * head_dim, BT = B * T;
  if (BT == 0 || C == 0) return;
  // Column and position indices are 32-bit in the table kernels; the grid's y extent is limited.
  const bool small = 2 * C <= (int64_t(1) << 24) && T <= (int64_t(1) << 30) &&
                     BT / rows + 1 < (int64_t(1) << 31) && pos0 >= 0;
  const float2* table = small ? rope_table(head_dim, theta, pos0 + T, stream) : nullptr;
  if (!table) return rope_per_pair(qkv, B, T, n_head, head_dim, theta, pos0, sign, op, stream);
  const int64_t half = head_dim / 2;
  if (C % 8 == 0 && head_dim % 8 == 0 && aligned16(qkv)) {
    switch (rows) {
      case 1: launch_table_apply<8, 1>(qkv, table, BT, T, pos0, C, half, sign, stream); break;
      case 2: launch_table_apply<8, 2>(qkv, table, BT, T, pos0, C, half, sign, stream); break;
      case 4: launch_table_apply<8, 4>(qkv, table, BT, T, pos0, C, half, sign, stream); break;
      case 8: launch_table_apply<8, 8>(qkv, table, BT, T, pos0, C, half, sign, stream); break;
      default: launch_table_apply<8, 2>(qkv, table, BT, T, pos0, C, half, sign, stream); break;
    }
  } else {
    launch_table_apply<2, 2>(qkv, table, BT, T, pos0, C, half, sign, stream);
  }
  QUEST_CUDA_LAUNCH_CHECK(op);
}

}  // namespace

void rope_forward(bf16* qkv, int64_t B, int64_t T, int64_t n_head, int64_t head_dim, float theta,
                  int64_t pos0, cudaStream_t stream) {
  rope_apply(qkv, B, T, n_head, head_dim, theta, pos0, +1.0f, "cuda::rope_forward", stream);
}

// The rotation is orthogonal: its transposed Jacobian is the rotation by -angle.
void rope_backward(bf16* dqkv, int64_t B, int64_t T, int64_t n_head, int64_t head_dim, float theta,
                   int64_t pos0, cudaStream_t stream) {
  rope_apply(dqkv, B, T, n_head, head_dim, theta, pos0, -1.0f, "cuda::rope_backward", stream);
}

// Not in cuda_ops.h: for tests/cuda/test_cuda_ops.cpp and bench/bench_memory_ops.cu, which declare
// them. The per-pair kernel (the pre-table implementation, the bitwise reference), and the table
// path with `rows` rows per block (1, 2, 4 or 8; rope_forward/backward use 2).
void rope_apply_reference(bf16* qkv, int64_t B, int64_t T, int64_t n_head, int64_t head_dim,
                          float theta, int64_t pos0, float sign, cudaStream_t stream) {
  check_args(B, T, n_head, head_dim, theta, "cuda::rope_apply_reference");
  rope_per_pair(qkv, B, T, n_head, head_dim, theta, pos0, sign, "cuda::rope_apply_reference", stream);
}

void rope_apply_rows(bf16* qkv, int64_t B, int64_t T, int64_t n_head, int64_t head_dim, float theta,
                     int64_t pos0, float sign, int rows, cudaStream_t stream) {
  rope_apply(qkv, B, T, n_head, head_dim, theta, pos0, sign, "cuda::rope_apply_rows", stream, rows);
}

}  // namespace quest::cuda
