// The grid family's Hadamard row quantizer (hadamard-ste / -clip / -trust, both forms) with the
// row slice in registers, and the dispatch of that family to the memory-speed kernels
// (launch_ht_grid_rows). It computes the SAME bits as row_quantize_kernel (row_quantize.cu),
// which stays the reference and the fallback.
//
// Why new kernels: row_quantize_kernel runs one CTA per row through a chain of barriers (2-byte
// loads into shared memory, transform, sum, one thread's grid, quantize, store); with few bytes in
// flight per SM it reached a third of the memory bandwidth. This kernel issues a row's loads at
// once (16 bytes a lane), keeps the row in registers and spends its barriers on teams of 1-8
// warps; it is bound by instruction issue, not by memory (docs/PERF.md).
//
// Kernel invariants (ht_grid_rows_kernel)
// - CTA = 8 warps; a row is owned by a team of P warps (P = 1, 2, 4, 8; 8 / P rows per CTA, team
//   i owns row 8 / P * blockIdx.x + i). The team reads x[r, :], writes xq[r, :] (unless xq is
//   null: codes only, for lowbit_quantize), codes[r, :] when asked for, the row's mask bytes and
//   step[r], nothing else; a team past the last row exits whole (its barriers count only its own
//   warps: named barrier 1 + team, or __syncwarp for P = 1). Its warp 0, lane 0 also asks L2 for
//   the inputs of row r + ts.ahead when that row exists (a prefetch: nothing enters the SM).
// - Registers: the row lives in registers from load to store, in vec_fwht.cuh's layout: in step s
//   (s < S) warp w of the team holds blocks 2 P s + 2 w (lanes 0-15) and + 1 (lanes 16-31), lane
//   h = lane & 15 entries 8h .. 8h + 7. All S loads are issued before any use. Each warp reads its
//   blocks before it writes them and writes no other block, so xq may alias x.
// - The double sum of squares is row_quantize_kernel's, operation for operation (its order is
//   described at ordered_row_sum, ht_row_common.cuh): the transformed row is staged in shared
//   memory (fp32, cols floats per team; 8 doubles per team for the cross-warp sums, then the row's
//   grid, which team warp 0 computes for all: team_row_grid) and summed in that order. Same step,
//   hence same bits.
// - Quantization: quantize8 (ht_row_common.cuh): grid_quantize's bits, through its finite-row
//   arithmetic where the row is finite.
// - Mask: lane h's 8 entries are byte 16 b + h of the row's mask words (little-endian words,
//   entry 64 w + i is bit i of word w), one byte store per lane; every byte of the row is written.
#include "core/error.h"
#include "ops/cuda_ops.h"
#include "quant/cuda/ht_row_kernel.cuh"
#include "quant/cuda/kernels.h"

// The kernel body lives in ht_row_kernel.cuh (shared with the producer-fused variants of
// fused_quantize.cu); here its source is the quantizer's own input tensor.
namespace quest::cuda::qdetail {

template <class TIn, class TOut>
bool launch_ht_grid_rows(const TIn* x, TOut* xq, const RowQuantArgs& a, cudaStream_t stream) {
  const auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  if (!ht_rows_shape_ok(a) || !aligned(x) || !aligned(xq) || (!xq && !a.codes)) return false;
  launch_ht_rows(TensorSource<TIn>{x}, xq, a, stream);
  return true;
}

template bool launch_ht_grid_rows<float, float>(const float*, float*, const RowQuantArgs&,
                                                cudaStream_t);
template bool launch_ht_grid_rows<float, bf16>(const float*, bf16*, const RowQuantArgs&,
                                               cudaStream_t);
template bool launch_ht_grid_rows<bf16, bf16>(const bf16*, bf16*, const RowQuantArgs&,
                                              cudaStream_t);
template bool launch_ht_grid_rows<bf16, float>(const bf16*, float*, const RowQuantArgs&,
                                               cudaStream_t);

}  // namespace quest::cuda::qdetail
