#pragma once
// HellaSwag zero-shot accuracy as lm-eval-harness computes it: each ending scored by the summed
// log-likelihood of its tokens after the context (the ending preceded by one space, lm-eval's
// target delimiter); acc = the best-scoring ending is the labelled one; acc_norm = the same with
// each score divided by the ending's length. lm-eval divides by len() of the Python string
// (characters); quest divides by the ending's UTF-8 bytes, as the issue asks: the same for ASCII
// endings, which is almost all of HellaSwag (ties go to the first ending, as numpy's argmax).
#include <cstdint>
#include <vector>

#include "data/tokenizer.h"
#include "eval/hellaswag_data.h"
#include "eval/loglik.h"

namespace quest {

struct HellaswagItemScore {
  std::vector<double> loglik;  // per ending
  int predicted = 0, predicted_norm = 0;
};

struct HellaswagResult {
  int64_t items = 0, correct = 0, correct_norm = 0;
  double acc() const { return items ? double(correct) / double(items) : 0.0; }
  double acc_norm() const { return items ? double(correct_norm) / double(items) : 0.0; }
  // Standard errors of the two means (sample standard deviation / sqrt(n), as lm-eval reports).
  double acc_stderr() const;
  double acc_norm_stderr() const;
  std::vector<HellaswagItemScore> scores;  // per item
};

// The index of the largest value, the first on ties.
int argmax_first(const std::vector<double>& v);

struct HellaswagOptions {
  int64_t items_per_call = 16;  // items whose endings go to the scorer at once
  bool prepend_eot = false;     // start each context with the tokenizer's end-of-text token
  bool progress = true;         // log_progress lines
};

HellaswagResult evaluate_hellaswag(const std::vector<HellaswagItem>& items, const Tokenizer& tokenizer,
                                   LoglikScorer& scorer, const HellaswagOptions& options = {});

}  // namespace quest
