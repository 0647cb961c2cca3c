#include "quant/hadamard.h"

#include "core/error.h"

namespace quest {

namespace {
// In-place unnormalized Walsh-Hadamard transform of one 128-chunk (natural/Sylvester order: the
// butterfly over bit h of the index gives H[i][j] = (-1)^popcount(i & j)).
inline void fwht128(float* v) {
  for (int h = 1; h < kHadamardBlock; h <<= 1) {
    for (int i = 0; i < kHadamardBlock; i += 2 * h) {
      for (int j = i; j < i + h; ++j) {
        const float a = v[j], b = v[j + h];
        v[j] = a + b;
        v[j + h] = a - b;
      }
    }
  }
  constexpr float norm = 0.08838834764831845f;  // 1 / sqrt(128): orthonormal
  for (int i = 0; i < kHadamardBlock; ++i) v[i] *= norm;
}
}  // namespace

void hadamard_transform_rows(float* x, int64_t rows, int64_t cols) {
  QUEST_CHECK(cols % kHadamardBlock == 0,
              "Hadamard transform: the row length (K = in_features) must be a multiple of {}, got {}",
              kHadamardBlock, cols);
  const int64_t blocks = rows * (cols / kHadamardBlock);
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < blocks; ++b) fwht128(x + b * kHadamardBlock);
}

}  // namespace quest
