#include "quant/mask_bits.h"

#include <algorithm>

#include "core/error.h"

namespace quest {

void MaskBits::reset(int64_t rows, int64_t cols) {
  rows_ = rows;
  cols_ = cols;
  wpr_ = words_for(cols);
  reserve(rows, cols);
  std::fill_n(words_.begin(), rows_ * wpr_, uint64_t(0));
}

int64_t MaskBits::count() const {
  int64_t n = 0;
  for (uint64_t w : words()) n += std::popcount(w);
  return n;
}

void MaskBits::apply(float* grad) const {
  const int64_t rows = rows_, cols = cols_;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const uint64_t* w = row(r);
    float* g = grad + r * cols;
    for (int64_t k = 0; k < wpr_; ++k) {
      uint64_t bits = w[k];
      while (bits) {  // masked entries are few: visit only the set bits
        g[k * 64 + std::countr_zero(bits)] = 0.0f;
        bits &= bits - 1;
      }
    }
  }
}

std::optional<double> MaskBits::persistence(const MaskBits& before, const MaskBits& after) {
  QUEST_CHECK(before.rows_ == after.rows_ && before.cols_ == after.cols_,
              "mask persistence: shapes differ ([{}, {}] vs [{}, {}])", before.rows_, before.cols_,
              after.rows_, after.cols_);
  const auto a = before.words(), b = after.words();
  int64_t masked = 0, still = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    masked += std::popcount(a[i]);
    still += std::popcount(a[i] & b[i]);
  }
  if (masked == 0) return std::nullopt;
  return double(still) / double(masked);
}

}  // namespace quest
