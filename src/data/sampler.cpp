#include "data/sampler.h"

#include <algorithm>
#include <utility>

#include "core/error.h"
#include "core/rng.h"

namespace quest {

namespace {

void check_fits(const TokenDataset& data, int64_t seq_len) {
  QUEST_CHECK(seq_len > 0, "sequence length must be positive, got {}", seq_len);
  QUEST_CHECK(data.size() >= uint64_t(seq_len) + 1,
              "the dataset has {} tokens, fewer than the {} that one window of sequence length {} "
              "needs (inputs plus the shifted targets)",
              data.size(), seq_len + 1, seq_len);
}

// x = tokens[s, s+T), y = tokens[s+1, s+T+1): read x, then y is x shifted plus one token.
void read_window(const TokenDataset& data, uint64_t s, int64_t T, int32_t* x, int32_t* y) {
  data.copy(s, uint64_t(T), x);
  std::copy(x + 1, x + T, y);
  data.copy(s + uint64_t(T), 1, y + T - 1);
}

}  // namespace

WindowSampler::WindowSampler(const TokenDataset& data, int64_t seq_len, uint64_t seed)
    : data_(data), seq_len_(seq_len), seed_(seed) {
  check_fits(data, seq_len);
  start_epoch(0);
}

void WindowSampler::start_epoch(uint64_t epoch) {
  const uint64_t T = uint64_t(seq_len_), N = data_.size();
  Rng rng(seed_ + epoch);
  // The offset keeps at least one whole window (s + T + 1 <= N) even for a dataset shorter than
  // 2T + 1 tokens; otherwise it is uniform in [0, T) as the spec says.
  offset_ = rng.below(std::min(T, N - T));
  const uint64_t count = (N - offset_ - 1) / T;
  QUEST_CHECK(count <= UINT32_MAX, "{} windows per epoch are more than the sampler supports",
              count);
  order_.resize(count);
  for (uint64_t k = 0; k < count; ++k) order_[k] = uint32_t(k);
  for (uint64_t k = count; k > 1; --k) std::swap(order_[k - 1], order_[rng.below(k)]);
  state_ = {epoch, 0};
}

void WindowSampler::next(int32_t* x, int32_t* y) {
  if (state_.index >= order_.size()) start_epoch(state_.epoch + 1);
  read_window(data_, window_start(state_.index), seq_len_, x, y);
  ++state_.index;
}

void WindowSampler::next_batch(int64_t batch, int32_t* x, int32_t* y) {
  for (int64_t b = 0; b < batch; ++b) next(x + b * seq_len_, y + b * seq_len_);
}

void WindowSampler::skip(uint64_t n) {
  while (n > 0) {
    if (state_.index >= order_.size()) start_epoch(state_.epoch + 1);
    const uint64_t step = std::min(n, order_.size() - state_.index);
    state_.index += step;
    n -= step;
  }
}

void WindowSampler::restore(const State& state) {
  if (state.epoch != state_.epoch) start_epoch(state.epoch);
  QUEST_CHECK(state.index <= order_.size(),
              "cannot restore the data sampler to window {} of epoch {}: that epoch has {} windows "
              "(was the dataset or sequence length changed?)",
              state.index, state.epoch, order_.size());
  state_ = state;
}

ValidationWindows::ValidationWindows(const TokenDataset& data, int64_t seq_len,
                                     uint64_t max_windows)
    : data_(data), seq_len_(seq_len) {
  check_fits(data, seq_len);
  count_ = (data.size() - 1) / uint64_t(seq_len);
  if (max_windows > 0) count_ = std::min(count_, max_windows);
}

void ValidationWindows::get(uint64_t i, int32_t* x, int32_t* y) const {
  QUEST_CHECK(i < count_, "validation window {} out of range ({} windows)", i, count_);
  read_window(data_, i * uint64_t(seq_len_), seq_len_, x, y);
}

void ValidationWindows::get_batch(uint64_t first, int64_t batch, int32_t* x, int32_t* y) const {
  for (int64_t b = 0; b < batch; ++b) get(first + uint64_t(b), x + b * seq_len_, y + b * seq_len_);
}

}  // namespace quest
