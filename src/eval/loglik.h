#pragma once
// Log-likelihood requests, as lm-eval-harness's "loglikelihood": the summed log-probability of a
// continuation's tokens after a context. A scorer interface, so that what uses the scores can be
// tested on a stub, and the model's scorer (batched forward passes).
#include <cstdint>
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

// Runs the model on up to `batch` requests at a time (longest first, right-padded to the longest
// of the batch; causal attention keeps padding out of earlier positions). A request longer than
// seq_len + 1 tokens keeps its last seq_len + 1 (lm-eval's left truncation).
class ModelScorer final : public LoglikScorer {
 public:
  ModelScorer(Model& model, int64_t batch);  // batch <= the model's planned batch
  std::vector<double> score(const std::vector<LoglikRequest>& requests) override;

 private:
  Model& model_;
  int64_t batch_;
  std::vector<int32_t> x_, y_;
  std::vector<float> losses_;
};

}  // namespace quest
