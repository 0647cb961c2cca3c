#pragma once
// Log-likelihood requests, as lm-eval-harness's "loglikelihood": the summed log-probability of a
// continuation's tokens after a context. A scorer interface, so that what uses the scores can be
// tested on a stub, and the model's scorer (batched forward passes on any backend).
#include <cstdint>
#include <functional>
#include <string_view>
#include <vector>

#include "data/tokenizer.h"
#include "model/llama.h"

namespace quest {

struct LoglikRequest {
  std::vector<int32_t> context, continuation;  // context not empty
};

// lm-eval's encoding of a (context, continuation) pair: trailing spaces of the context move to
// the continuation; the whole text is encoded once and the continuation is what follows the
// context's own encoding (so the tokens at the seam are the whole text's).
LoglikRequest encode_request(const Tokenizer& tokenizer, std::string_view context,
                             std::string_view continuation);

class LoglikScorer {
 public:
  virtual ~LoglikScorer() = default;
  // One summed log-likelihood (natural log) per request, in order.
  virtual std::vector<double> score(const std::vector<LoglikRequest>& requests) = 0;
};

// A model's per-token losses (natural log) of one batch of tokens x and targets y, [B, T] with
// B <= its batch and T <= its seq_len, into losses [B, T]: Model::forward_loss or
// Engine::forward_loss, so that one scorer serves every backend.
using TokenLosses = std::function<void(const int32_t* x, const int32_t* y, int64_t B, int64_t T, float* losses)>;

// Runs the model on up to `batch` requests at a time (longest first, right-padded to the longest
// of the batch; causal attention keeps padding out of earlier positions). A request longer than
// seq_len + 1 tokens keeps its last seq_len + 1 (lm-eval's left truncation).
class ModelScorer final : public LoglikScorer {
 public:
  ModelScorer(TokenLosses losses, int64_t batch, int64_t seq_len);
  ModelScorer(Model& model, int64_t batch);  // batch <= the model's planned batch
  std::vector<double> score(const std::vector<LoglikRequest>& requests) override;

 private:
  TokenLosses token_losses_;
  int64_t batch_, seq_len_;
  std::vector<int32_t> x_, y_;
  std::vector<float> losses_;
};

}  // namespace quest
