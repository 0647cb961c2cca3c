#pragma once
// The Hopper (sm_90a, wgmma) causal attention backward for head_dim 128, and the entries that let
// tests and benchmarks reach either implementation directly (attention_backward.cu dispatches).
#include <cstdint>

#include "ops/cuda_ops.h"

namespace quest::cuda {

// True when the current device is compute capability 9.0 and this binary carries the sm_90a code
// of the kernels (not a PTX or sm_80 fallback). Cached per device.
bool attention_backward_sm90_available();

// Whether attention_backward takes the sm_90a path for this head_dim: head_dim == 128, the device
// qualifies (above), and the environment variable QUEST_ATTN_SM90_BWD is not "0" (read once;
// "1" .. "3" select a variant, see attention_backward_sm90_config).
bool attention_backward_uses_sm90(int64_t head_dim);

// The sm_90a backward; the contract of attention_backward (cuda_ops.h), head_dim == 128 only,
// throws quest::Error when attention_backward_sm90_available() is false. Same scratch size.
void attention_backward_sm90(bf16* dqkv, const bf16* dout, const bf16* out, const bf16* qkv,
                             const float* lse, int64_t B, int64_t T, int64_t n_head,
                             int64_t head_dim, float* scratch, cudaStream_t stream);

// attention_backward_sm90 with a chosen variant, for tests and benchmarks (attention_backward and
// attention_backward_sm90 take the default, or the one QUEST_ATTN_SM90_BWD=1..3 names):
//   1: 64 rows (queries or keys) a block, one warpgroup, two blocks per SM, all operands of the
//      products in shared memory but the P / dS operands;
//   2: as 1 with 128 rows a block (two warpgroups, one block per SM);
//   3 (the default): as 1, and the dQ kernel keeps Q and dO in registers (the A operands of S and
//      dP) with a three-stage key ring.
// All three give identical bits (the same summation orders).
// kernels: bit 0 runs the dQ kernel (which also writes D to the scratch), bit 1 the dK/dV kernel
// (which reads it).
void attention_backward_sm90_config(bf16* dqkv, const bf16* dout, const bf16* out, const bf16* qkv,
                                    const float* lse, int64_t B, int64_t T, int64_t n_head,
                                    int64_t head_dim, float* scratch, cudaStream_t stream,
                                    int variant, int kernels);

// The mma.sync (sm_80) backward, bypassing the dispatch: the contract of attention_backward.
void attention_backward_mma(bf16* dqkv, const bf16* dout, const bf16* out, const bf16* qkv,
                            const float* lse, int64_t B, int64_t T, int64_t n_head,
                            int64_t head_dim, float* scratch, cudaStream_t stream);

}  // namespace quest::cuda
