// Token embedding lookup and its scatter-add backward (deterministic, no atomics).
//
// Token ids live on the device, so they cannot be validated on the host: a NEGATIVE id gives a
// row of NaN in the forward (loud downstream) and is skipped in the backward; ids past the end of
// the table (whose row count is not passed) are the caller's to prevent, as on the CPU.
#include <cub/device/device_radix_sort.cuh>

#include "ops/cuda/common.cuh"

namespace quest::cuda {
namespace {

using namespace detail;

// Forward (fp32 table: the master weight, as the reference reads it; fp32 out: the residual
// stream). 256-thread blocks, grid-stride over N * (d / VEC) items; item i = (row n, group c)
// copies VEC columns of table[tokens[n]] to out[n]. VEC = 4: d % 4 == 0 and both pointers
// 16-byte aligned, one 16-byte copy per item; VEC = 1 otherwise.
template <int VEC>
__global__ void embedding_forward_kernel(float* out, const int32_t* tokens, const float* table,
                                         int64_t N, int64_t d) {
  const int64_t groups = d / VEC, items = N * groups;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < items; i += stride) {
    const int64_t n = i / groups, c = (i - n * groups) * VEC;
    const int32_t tok = tokens[n];
    float* o = out + n * d + c;
    if constexpr (VEC == 4) {
      const float q = __int_as_float(0x7fc00000);
      *reinterpret_cast<float4*>(o) =
          tok < 0 ? make_float4(q, q, q, q) : *reinterpret_cast<const float4*>(table + int64_t(tok) * d + c);
    } else {
      *o = tok < 0 ? __int_as_float(0x7fc00000) : table[int64_t(tok) * d + c];
    }
  }
}

// Backward, after a stable sort of (token, row) pairs by token: the rows of each token are
// contiguous in `rows`, in increasing order. One block of kThreads per sorted position i; the
// block whose position starts a run of equal tokens owns table row tokens[i] and adds the run's
// dout rows to it in order, VEC columns per thread (8 with d % 8 == 0 and aligned pointers, else
// 1): acc = dtable; acc += dout[m1]; acc += dout[m2]; ... in fp32, exactly the CPU's order, so
// the result is bitwise the CPU's and does not depend on scheduling. Other blocks exit at once.
// Negative ids (sorted first) are skipped.
constexpr int kThreads = 256;

template <int VEC>
__global__ void __launch_bounds__(kThreads)
    embedding_backward_kernel(float* dtable, const float* dout, const int32_t* sorted_tokens,
                              const int32_t* rows, int64_t N, int64_t d) {
  const int64_t i = blockIdx.x;
  const int32_t tok = sorted_tokens[i];
  if (tok < 0 || (i > 0 && sorted_tokens[i - 1] == tok)) return;  // uniform over the block
  int64_t end = i + 1;
  while (end < N && sorted_tokens[end] == tok) ++end;
  float* dst = dtable + int64_t(tok) * d;
  for (int64_t c = int64_t(threadIdx.x) * VEC; c < d; c += int64_t(kThreads) * VEC) {
    float acc[VEC];
    load<VEC>(dst + c, acc);
    for (int64_t r = i; r < end; ++r) {
      float f[VEC];
      load<VEC>(dout + int64_t(rows[r]) * d + c, f);
#pragma unroll
      for (int k = 0; k < VEC; ++k) acc[k] += f[k];
    }
    store<VEC>(dst + c, acc);
  }
}

__global__ void iota_kernel(int32_t* out, int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = int32_t(i);
}

// Scratch layout: sorted tokens [N], row ids [N], sorted row ids [N] (int32, each padded to 16
// bytes), then CUB's temporary storage.
int64_t padded(int64_t n) { return (n * 4 + 15) / 16 * 16; }

size_t sort_temp_bytes(int64_t N) {
  size_t bytes = 0;
  cub::DeviceRadixSort::SortPairs(nullptr, bytes, static_cast<const int32_t*>(nullptr),
                                  static_cast<int32_t*>(nullptr), static_cast<const int32_t*>(nullptr),
                                  static_cast<int32_t*>(nullptr), int(N));
  return bytes;
}

}  // namespace

void embedding_forward(float* out, const int32_t* tokens, const float* table, int64_t N, int64_t d,
                       cudaStream_t stream) {
  QUEST_CUDA_REQUIRE(N >= 0 && d >= 0, "cuda::embedding_forward: negative shape N=", N, " d=", d);
  if (N == 0 || d == 0) return;
  if (d % 4 == 0 && aligned16(out) && aligned16(table)) {
    embedding_forward_kernel<4><<<grid_for(N * d / 4, 256), 256, 0, stream>>>(out, tokens, table, N, d);
  } else {
    embedding_forward_kernel<1><<<grid_for(N * d, 256), 256, 0, stream>>>(out, tokens, table, N, d);
  }
  QUEST_CUDA_LAUNCH_CHECK("embedding_forward_kernel");
}

int64_t embedding_backward_scratch_bytes(int64_t N) {
  return N <= 0 ? 0 : 3 * padded(N) + int64_t(sort_temp_bytes(N));
}

void embedding_backward(float* dtable, const float* dout, const int32_t* tokens, int64_t N, int64_t d,
                        void* scratch, cudaStream_t stream) {
  QUEST_CUDA_REQUIRE(N >= 0 && d >= 0, "cuda::embedding_backward: negative shape N=", N, " d=", d);
  QUEST_CUDA_REQUIRE(N <= INT32_MAX, "cuda::embedding_backward: too many rows N=", N);
  if (N == 0 || d == 0) return;
  auto* base = static_cast<char*>(scratch);
  auto* sorted = reinterpret_cast<int32_t*>(base);
  auto* rows = reinterpret_cast<int32_t*>(base + padded(N));
  auto* sorted_rows = reinterpret_cast<int32_t*>(base + 2 * padded(N));
  size_t temp_bytes = sort_temp_bytes(N);
  iota_kernel<<<grid_for(N, 256), 256, 0, stream>>>(rows, N);
  QUEST_CUDA_LAUNCH_CHECK("iota_kernel");
  // LSD radix sort: stable, so each token's rows stay in increasing order.
  check(cub::DeviceRadixSort::SortPairs(base + 3 * padded(N), temp_bytes, tokens, sorted, rows, sorted_rows,
                                        int(N), 0, 32, stream),
        "cub::DeviceRadixSort::SortPairs", __FILE__, __LINE__);
  if (d % 8 == 0 && aligned16(dtable) && aligned16(dout)) {
    embedding_backward_kernel<8><<<unsigned(N), kThreads, 0, stream>>>(dtable, dout, sorted, sorted_rows, N, d);
  } else {
    embedding_backward_kernel<1><<<unsigned(N), kThreads, 0, stream>>>(dtable, dout, sorted, sorted_rows, N, d);
  }
  QUEST_CUDA_LAUNCH_CHECK("embedding_backward_kernel");
}

}  // namespace quest::cuda
