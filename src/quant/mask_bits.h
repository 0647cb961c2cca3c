#pragma once
// A bit-packed gradient mask saved by a quantizer's forward for its backward: one bit per entry of a
// [rows, cols] tensor, SET where the gradient is masked out (zeroed). Each row starts on a fresh
// 64-bit word so rows can be written in parallel; padding bits stay 0.
//
// Storage is reserved once (reserve(), or the first reset() of a given size); reset() to a shape that
// fits allocates nothing. Copying a MaskBits into one with enough capacity does not allocate either
// (std::vector assignment reuses capacity), which is how a caller keeps the previous evaluation's
// mask for persistence().
#include <bit>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

namespace quest {

class MaskBits {
 public:
  static int64_t words_for(int64_t cols) { return (cols + 63) / 64; }

  void reserve(int64_t rows, int64_t cols) {
    const size_t need = size_t(rows * words_for(cols));
    if (words_.size() < need) words_.resize(need);
  }
  // Sets the active shape and clears every bit (allocates only if the shape exceeds the capacity).
  void reset(int64_t rows, int64_t cols);

  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  int64_t words_per_row() const { return wpr_; }
  bool empty() const { return rows_ * cols_ == 0; }

  uint64_t* row(int64_t r) { return words_.data() + r * wpr_; }
  const uint64_t* row(int64_t r) const { return words_.data() + r * wpr_; }
  static void set(uint64_t* row_words, int64_t c) { row_words[c >> 6] |= uint64_t(1) << (c & 63); }
  bool test(int64_t r, int64_t c) const { return (row(r)[c >> 6] >> (c & 63)) & 1; }

  // The active words (rows * words_per_row()).
  std::span<const uint64_t> words() const { return {words_.data(), size_t(rows_ * wpr_)}; }

  int64_t count() const;  // entries masked out
  double fraction() const { return empty() ? 0.0 : double(count()) / double(rows_ * cols_); }

  // grad[rows, cols]: zero every masked entry.
  void apply(float* grad) const;

  // Fraction of the entries masked in `before` that are still masked in `after` (same shape);
  // nullopt when `before` masks nothing (the figure is undefined then).
  static std::optional<double> persistence(const MaskBits& before, const MaskBits& after);

 private:
  std::vector<uint64_t> words_;
  int64_t rows_ = 0, cols_ = 0, wpr_ = 0;
};

}  // namespace quest
