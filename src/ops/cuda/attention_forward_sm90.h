#pragma once
// The two CUDA causal attention forwards behind cuda::attention_forward (cuda_ops.h), callable
// one by one so that tests and benchmarks can compare them:
// - attention_forward_mma: the mma.sync kernel (attention_forward.cu; sm_80 and up, head_dim
//   8..128);
// - attention_forward_sm90: the Hopper kernel (attention_forward_sm90.cu: wgmma, TMA, warp
//   specialization; head_dim 128 only), launchable where attention_forward_sm90_available().
// Both take the arguments of cuda::attention_forward, already checked by it (shape, pointers,
// alignment), and compute the same function: out = softmax(q k^T / sqrt(head_dim), causal) v in
// bf16, lse = the natural log-sum-exp of each query's scaled scores (fp32, [B, n_head, T]).
// cuda::attention_forward takes the sm90 kernel when attention_forward_sm90_enabled() and
// head_dim == 128; the environment variable QUEST_ATTN_SM90=0 (read once per process) turns it
// off.
#include <cuda_runtime.h>

#include <cstdint>

#include "ops/cuda_ops.h"

namespace quest::cuda::attn {

void attention_forward_mma(bf16* out, float* lse, const bf16* qkv, int64_t B, int64_t T,
                           int64_t n_head, int64_t head_dim, cudaStream_t stream);

// The current device is compute capability 9.0 and this binary holds the kernel's sm_90a code.
bool attention_forward_sm90_available();
// attention_forward_sm90_available() and QUEST_ATTN_SM90 is not "0".
bool attention_forward_sm90_enabled();
// Kernel variants (same results, bit for bit), for benchmarks and tests: the default has
// ping-pong (the consumers' wgmma batches alternate between the two consumer warpgroups) and L2
// eviction hints on the loads (Q evict-first, K/V evict-last); kNoPingPong drops the former,
// kNoL2Hints the latter.
enum class Sm90Variant { kDefault, kNoPingPong, kNoL2Hints };
// Requires head_dim == 128 and attention_forward_sm90_available() (quest::Error otherwise).
void attention_forward_sm90(bf16* out, float* lse, const bf16* qkv, int64_t B, int64_t T,
                            int64_t n_head, int64_t head_dim, cudaStream_t stream,
                            Sm90Variant variant = Sm90Variant::kDefault);

}  // namespace quest::cuda::attn
