#pragma once
// Validation loss, perplexity and bits per byte of a model on a split's fixed windows.
#include <cstdint>
#include <functional>
#include <optional>

#include "data/token_dataset.h"
#include "dist/communicator.h"
#include "model/llama.h"

namespace quest {

struct EvalResult {
  double loss = 0;  // mean per token, nats
  double perplexity = 0;
  std::optional<double> bits_per_byte;  // when the split's metadata gives its text bytes
  int64_t windows = 0, tokens = 0;
};

// Mean token loss over the split's non-overlapping seq_len windows from offset 0 (all of them,
// or the first max_windows), `batch` windows at a time (batch <= the model's planned batch).
// bits per byte = loss / ln 2 * (split tokens / split text bytes), from the split's meta.json.
EvalResult evaluate_split(Model& model, const TokenDataset& data, int64_t batch,
                          int64_t max_windows = 0);
// The same with any model: loss_sum(x, y, B, T) returns the sum of token losses of a batch.
// With a communicator (collective), rank r takes batches r, r + R, ... and the sums are added up.
using LossSum = std::function<double(const int32_t*, const int32_t*, int64_t, int64_t)>;
EvalResult evaluate_split(const LossSum& loss_sum, int64_t seq_len, const TokenDataset& data,
                          int64_t batch, int64_t max_windows = 0, Communicator* comm = nullptr);

}  // namespace quest
