#include "eval/hellaswag.h"

#include <chrono>
#include <cmath>

#include "core/log.h"

namespace quest {

namespace {
double stderr_of(int64_t hits, int64_t n) {
  if (n < 2) return 0.0;
  const double p = double(hits) / double(n);
  return std::sqrt(p * (1.0 - p) * double(n) / double(n - 1) / double(n));
}
}  // namespace

double HellaswagResult::acc_stderr() const { return stderr_of(correct, items); }
double HellaswagResult::acc_norm_stderr() const { return stderr_of(correct_norm, items); }

int argmax_first(const std::vector<double>& v) {
  int best = 0;
  for (size_t i = 1; i < v.size(); ++i)
    if (v[i] > v[size_t(best)]) best = int(i);
  return best;
}

HellaswagResult evaluate_hellaswag(const std::vector<HellaswagItem>& items, const Tokenizer& tokenizer,
                                   LoglikScorer& scorer, const HellaswagOptions& options) {
  using clock = std::chrono::steady_clock;
  const auto start = clock::now();
  HellaswagResult r;
  const int64_t chunk = std::max<int64_t>(1, options.items_per_call);
  for (size_t first = 0; first < items.size(); first += size_t(chunk)) {
    const size_t last = std::min(items.size(), first + size_t(chunk));
    std::vector<LoglikRequest> requests;
    for (size_t i = first; i < last; ++i)
      for (const auto& ending : items[i].endings) {
        LoglikRequest q = encode_request(tokenizer, items[i].context, " " + ending);
        if (options.prepend_eot || q.context.empty()) q.context.insert(q.context.begin(), tokenizer.eot_token());
        requests.push_back(std::move(q));
      }
    const std::vector<double> ll = scorer.score(requests);
    size_t k = 0;
    for (size_t i = first; i < last; ++i) {
      const auto& item = items[i];
      HellaswagItemScore s;
      std::vector<double> norm;
      for (const auto& ending : item.endings) {
        s.loglik.push_back(ll[k++]);
        norm.push_back(s.loglik.back() / double(std::max<size_t>(ending.size(), 1)));
      }
      s.predicted = argmax_first(s.loglik);
      s.predicted_norm = argmax_first(norm);
      r.correct += s.predicted == item.label;
      r.correct_norm += s.predicted_norm == item.label;
      ++r.items;
      r.scores.push_back(std::move(s));
    }
    if (options.progress) {
      const double secs = std::chrono::duration<double>(clock::now() - start).count();
      const double rate = double(r.items) / std::max(secs, 1e-9);
      log_progress("hellaswag {:>5}/{} | acc {:.4f} | acc_norm {:.4f} | {:.1f} items/s | ETA {}", r.items,
                   items.size(), r.acc(), r.acc_norm(), rate,
                   format_duration(double(items.size() - size_t(r.items)) / std::max(rate, 1e-9)));
    }
  }
  return r;
}

}  // namespace quest
