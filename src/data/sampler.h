#pragma once
// Training and validation windows over a token stream (QUEST_SPEC section 6).
//
// Training: each epoch e draws, from quest::Rng(seed + e), first an offset in [0, T) and then a
// Fisher-Yates permutation of the non-overlapping windows starting at that offset. Window k starts
// at s = offset + k*T and gives x = tokens[s, s+T), y = tokens[s+1, s+T+1). The sequence of
// windows depends only on (dataset, T, seed), never on the batch size, so data-parallel training
// can split each global batch across ranks: rank r of R with B rows each calls skip(r*B),
// next_batch(B, ...), skip((R-1-r)*B).
#include <cstdint>
#include <vector>

#include "data/token_dataset.h"

namespace quest {

class WindowSampler {
 public:
  // Position in the sequence of windows: the `index`-th window of epoch `epoch`.
  struct State {
    uint64_t epoch = 0;
    uint64_t index = 0;
    bool operator==(const State&) const = default;
  };

  // Throws when the dataset has fewer than seq_len + 1 tokens. The dataset must outlive the
  // sampler.
  WindowSampler(const TokenDataset& data, int64_t seq_len, uint64_t seed);

  // One window: x and y each receive seq_len tokens.
  void next(int32_t* x, int32_t* y);
  // `batch` windows, row-major [batch, seq_len].
  void next_batch(int64_t batch, int32_t* x, int32_t* y);
  // Pass over n windows without reading them (crossing epochs as next() would).
  void skip(uint64_t n);

  // The position of the next window; restore() regenerates that epoch's offset and permutation,
  // so a resumed run sees exactly the same windows.
  State state() const { return state_; }
  void restore(const State& state);

  int64_t seq_len() const { return seq_len_; }
  uint64_t epoch() const { return state_.epoch; }
  // The current epoch's offset and number of windows (the latter can differ by one between
  // epochs, with the offset).
  uint64_t offset() const { return offset_; }
  uint64_t windows_in_epoch() const { return order_.size(); }
  // Start of the current epoch's k-th window in the token stream (for tests and diagnostics).
  uint64_t window_start(uint64_t k) const { return offset_ + uint64_t(order_[k]) * seq_len_; }

 private:
  void start_epoch(uint64_t epoch);  // draw the offset and permutation of `epoch`

  const TokenDataset& data_;
  int64_t seq_len_;
  uint64_t seed_;
  State state_;
  uint64_t offset_ = 0;
  std::vector<uint32_t> order_;  // permuted window numbers of the current epoch
};

// The fixed validation windows: every non-overlapping window from offset 0, in order (window i
// starts at i*T), optionally only the first max_windows.
class ValidationWindows {
 public:
  // max_windows = 0: all of them. Throws when the dataset has fewer than seq_len + 1 tokens.
  ValidationWindows(const TokenDataset& data, int64_t seq_len, uint64_t max_windows = 0);

  uint64_t count() const { return count_; }
  int64_t seq_len() const { return seq_len_; }
  // Window i (< count()): x and y each receive seq_len tokens.
  void get(uint64_t i, int32_t* x, int32_t* y) const;
  // Windows first .. first+batch-1, row-major [batch, seq_len].
  void get_batch(uint64_t first, int64_t batch, int32_t* x, int32_t* y) const;

 private:
  const TokenDataset& data_;
  int64_t seq_len_;
  uint64_t count_;
};

}  // namespace quest
