// Token embedding lookup and its scatter-add backward.
#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "ops/cpu_ops.h"
#include "ops/op_profile.h"

namespace quest::cpu {
namespace {

// The table's row count is not passed, so only negative ids can be caught here; validated
// serially, before any parallel region (an exception must not escape an OpenMP region).
void check_tokens(const char* op, const int32_t* tokens, int64_t N) {
  for (int64_t n = 0; n < N; ++n)
    QUEST_CHECK(tokens[n] >= 0, "{}: negative token id {} at row {}", op, tokens[n], n);
}

}  // namespace

void embedding_forward(float* out, const int32_t* tokens, const float* table, int64_t N,
                       int64_t d) {
  QUEST_OP_PROFILE("embedding_forward");
  QUEST_CHECK(N >= 0 && d >= 0, "embedding_forward: negative shape N={} d={}", N, d);
  check_tokens("embedding_forward", tokens, N);
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n)
    std::memcpy(out + n * d, table + int64_t(tokens[n]) * d, size_t(d) * sizeof(float));
}

void embedding_backward(float* dtable, const float* dout, const int32_t* tokens, int64_t N,
                        int64_t d) {
  QUEST_OP_PROFILE("embedding_backward");
  QUEST_CHECK(N >= 0 && d >= 0, "embedding_backward: negative shape N={} d={}", N, d);
  check_tokens("embedding_backward", tokens, N);
  // Repeated tokens hit the same table row, so threads split the COLUMNS: each column block is
  // owned by one thread and summed over rows in order 0..N-1, whatever the thread count.
  constexpr int64_t kBlock = 64;
  const int64_t n_blocks = (d + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static)
  for (int64_t blk = 0; blk < n_blocks; ++blk) {
    const int64_t j0 = blk * kBlock, j1 = std::min(d, j0 + kBlock);
    for (int64_t n = 0; n < N; ++n) {
      float* dst = dtable + int64_t(tokens[n]) * d;
      const float* src = dout + n * d;
      for (int64_t j = j0; j < j1; ++j) dst[j] += src[j];
    }
  }
}

}  // namespace quest::cpu
