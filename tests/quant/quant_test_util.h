#pragma once
// Helpers shared by the quant tests: seeded Gaussian data and an independent dense Hadamard
// transform built from the popcount formula of QUEST_SPEC.md section 2 (no FWHT).
#include <bit>
#include <cmath>
#include <cstdint>
#include <vector>

#include <fmt/format.h>

#include "core/rng.h"

namespace quest::test {

inline std::vector<float> gaussian(int64_t n, uint64_t seed, double sigma = 1.0) {
  Rng rng(seed);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = float(sigma * rng.normal());
  return v;
}

// H[i][j] = (-1)^popcount(i & j) / sqrt(128), row-major 128 x 128.
inline std::vector<double> dense_hadamard128() {
  std::vector<double> h(128 * 128);
  const double s = 1.0 / std::sqrt(128.0);
  for (int i = 0; i < 128; ++i)
    for (int j = 0; j < 128; ++j) h[i * 128 + j] = (std::popcount(unsigned(i & j)) % 2 ? -s : s);
  return h;
}

// y[r, blk*128 + j] = sum_i x[r, blk*128 + i] * H[i][j]  (row vector times the block), in double.
inline std::vector<double> dense_ht_rows(const std::vector<double>& x, int64_t rows, int64_t cols) {
  static const std::vector<double> H = dense_hadamard128();
  std::vector<double> y(x.size(), 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t b = 0; b < cols; b += 128)
      for (int i = 0; i < 128; ++i) {
        const double xi = x[r * cols + b + i];
        for (int j = 0; j < 128; ++j) y[r * cols + b + j] += xi * H[i * 128 + j];
      }
  return y;
}

template <class T>
std::vector<double> to_double(const std::vector<T>& v) {
  return std::vector<double>(v.begin(), v.end());
}

}  // namespace quest::test
