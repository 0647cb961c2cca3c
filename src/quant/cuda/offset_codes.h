#pragma once
// The offset form of the int8 route's codes (docs/LOWBIT_GEMM.md, "Offset codes").
//
// A b-bit level q in [qmin, qmax] = [1 - 2^(b-1), 2^(b-1)] has the odd code c = 2q - 1 in
// [-z, z], z = 2^b - 1 (the signed form), and the offset code u = q - qmin = (c + z) / 2 in
// [0, z] (the offset form): the same level, with every bit above the b-th zero. Why: the H100
// runs the int8 product at its power cap, and the tensor cores draw less with the upper bits of
// both operands still: on offset codes the 7B products alone run 1-5% faster one call at a time
// and 11-19% faster in a stream of calls; with the correction below, the whole 7B layer is as
// fast one call at a time and 5-19% faster in a stream (docs/PERF.md, session 14).
//
// The product stays exact: with the row sums Ux[n] = sum_k ux[n, k] and Uw[m] = sum_k uw[m, k],
//   sum_k cx cw = 4 sum_k ux uw - 2 zw Ux[n] - 2 zx Uw[m] + K zx zw,
// computed in uint32 (mod 2^32): the left side fits int32 wherever the signed form's sums do, so
// the wrapped result is exact, and so are the scaled outputs, bit for bit the signed form's.
#include <cstdint>

namespace quest::cuda {

// The row sums and widths of a product's offset codes (both operands in the offset form).
struct OffsetCodes {
  const int32_t* x_sums = nullptr;  // [N]: sum over k of xc[n, k]
  const int32_t* w_sums = nullptr;  // [M]: sum over k of wc[m, k]
  int x_bits = 0, w_bits = 0;       // 1 .. 7 (offset codes <= 127, so s8 operands)
};

inline constexpr int kOffsetMaxBits = 7;

// Both row sums given and both widths in 1 .. kOffsetMaxBits (each reader adds the alignment of
// w_sums it loads with).
inline bool offset_codes_valid(const OffsetCodes& o) {
  return o.x_sums && o.w_sums && o.x_bits >= 1 && o.x_bits <= kOffsetMaxBits && o.w_bits >= 1 &&
         o.w_bits <= kOffsetMaxBits;
}

#if defined(__CUDACC__)
#define QUEST_HD __host__ __device__ __forceinline__
#else
#define QUEST_HD inline
#endif

// z = 2^bits - 1: the offset of the codes (c = 2u - z).
QUEST_HD uint32_t offset_zero(int bits) { return (1u << bits) - 1u; }

// The terms of sum_k cx cw that depend on the row n alone (with the constant) and on the
// column m alone; sum_k cx cw = offset_sum(sum_k ux uw, row_term + col_term).
QUEST_HD uint32_t offset_row_term(int32_t x_sum, uint32_t K, uint32_t zx, uint32_t zw) {
  return K * zx * zw - 2u * zw * uint32_t(x_sum);
}
QUEST_HD uint32_t offset_col_term(int32_t w_sum, uint32_t zx) { return 0u - 2u * zx * uint32_t(w_sum); }
QUEST_HD int32_t offset_sum(int32_t acc, uint32_t terms) {
  return int32_t(4u * uint32_t(acc) + terms);
}

#undef QUEST_HD

}  // namespace quest::cuda
