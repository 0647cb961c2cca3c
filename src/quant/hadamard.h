#pragma once
// The block-diagonal Hadamard transform of QUEST_SPEC.md section 2: orthonormal 128 x 128
// Sylvester blocks along each row, H[i][j] = (-1)^popcount(i & j) / sqrt(128), computed by a fast
// Walsh-Hadamard transform (7 butterfly stages per block). H is symmetric and orthonormal, so the
// transform is its own inverse.
#include <cstdint>

namespace quest {

inline constexpr int64_t kHadamardBlock = 128;

// x[rows, cols] transformed in place, block by block over each row's contiguous 128-chunks.
// Throws quest::Error when cols is not a multiple of 128.
void hadamard_transform_rows(float* x, int64_t rows, int64_t cols);

}  // namespace quest
