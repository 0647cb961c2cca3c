// Rotary position embedding on adjacent pairs (2i, 2i+1) of each head of q and k, in place, as
// cpu::rope_forward / rope_backward. The angle pos * theta^(-2i/head_dim) is formed in double (the
// frequencies come from the host in double), reduced to [-pi, pi] in double, and only then taken
// to float for sincosf, so long positions keep the low-frequency pairs' phase as on the CPU (cos
// and sin agree with the CPU's double ones rounded to float within an ulp or two) without double
// transcendentals on the device; the rotation itself is fp32 with one bf16 rounding per value.
#include <cmath>

#include "ops/cuda/common.cuh"

namespace quest::cuda {
namespace {

using namespace detail;

constexpr int kMaxPairs = 512;  // head_dim <= 1024
// theta^(-2i/head_dim) for pair i of the current call, written before each launch (stream order).
__device__ double g_inv_freq[kMaxPairs];

// 256-thread blocks, grid-stride over B*T rows x (2C / VEC) groups of the row's q|k part (its first
// 2C values; v is never touched). A thread owns VEC consecutive values = VEC/2 whole pairs
// (VEC = 8: one 16-byte access, needs C % 8 == 0 and a 16-byte aligned qkv; VEC = 2: one pair).
// Pair column j (even, relative to the row's start) is pair i = (j % head_dim) / 2 of its head,
// since q and k heads both start at multiples of head_dim. sign = +1 rotates, -1 inverts.
template <int VEC>
__global__ void rope_kernel(bf16* qkv, int64_t BT, int64_t T, int64_t C, int64_t head_dim,
                            int64_t pos0, float sign) {
  constexpr double kTwoPi = 6.283185307179586476925286766559;
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

void rope_apply(bf16* qkv, int64_t B, int64_t T, int64_t n_head, int64_t head_dim, float theta,
                int64_t pos0, float sign, const char* op, cudaStream_t stream) {
  QUEST_CUDA_REQUIRE(B >= 0 && T >= 0 && n_head >= 0 && head_dim > 0 && head_dim % 2 == 0, op,
                     ": bad shape B=", B, " T=", T, " n_head=", n_head, " head_dim=", head_dim,
                     " (head_dim must be even)");
  QUEST_CUDA_REQUIRE(theta > 0.0f, op, ": theta must be positive, got ", theta);
  QUEST_CUDA_REQUIRE(head_dim / 2 <= kMaxPairs, op, ": head_dim ", head_dim, " exceeds ", 2 * kMaxPairs);
  const int64_t C = n_head * head_dim, BT = B * T;
  if (BT == 0 || C == 0) return;
  // The CPU's frequencies, in double; a static host copy keeps the asynchronous copy's source
  // alive (every call writes the same values for the same head_dim and theta).
  const double log_theta = std::log(double(theta));
  static thread_local double inv_freq[kMaxPairs];
  for (int64_t i = 0; i < head_dim / 2; ++i)
    inv_freq[i] = std::exp(-double(2 * i) / double(head_dim) * log_theta);
  check(cudaMemcpyToSymbolAsync(g_inv_freq, inv_freq, sizeof(double) * size_t(head_dim / 2), 0,
                                cudaMemcpyHostToDevice, stream),
        "rope frequencies", __FILE__, __LINE__);
  if (C % 8 == 0 && aligned16(qkv))
    rope_kernel<8><<<grid_for(BT * 2 * C / 8, 256), 256, 0, stream>>>(qkv, BT, T, C, head_dim, pos0, sign);
  else
    rope_kernel<2><<<grid_for(BT * C, 256), 256, 0, stream>>>(qkv, BT, T, C, head_dim, pos0, sign);
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

}  // namespace quest::cuda
