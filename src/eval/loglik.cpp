#include "eval/loglik.h"

#include <algorithm>
#include <numeric>
#include <string>
#include <utility>

#include "core/error.h"

namespace quest {

LoglikRequest encode_request(const Tokenizer& tokenizer, std::string_view context,
                             std::string_view continuation) {
  std::string ctx(context), cont(continuation);
  const size_t keep = ctx.find_last_not_of(" \t\n\r\f\v");
  const size_t n_spaces = keep == std::string::npos ? ctx.size() : ctx.size() - keep - 1;
  if (n_spaces > 0) {
    cont = ctx.substr(ctx.size() - n_spaces) + cont;
    ctx.resize(ctx.size() - n_spaces);
  }
  const std::vector<int32_t> whole = tokenizer.encode(ctx + cont);
  LoglikRequest r;
  r.context = tokenizer.encode(ctx);
  const size_t n = std::min(r.context.size(), whole.size());
  r.continuation.assign(whole.begin() + int64_t(n), whole.end());
  return r;
}

ModelScorer::ModelScorer(TokenLosses losses, int64_t batch, int64_t seq_len)
    : token_losses_(std::move(losses)), batch_(batch), seq_len_(seq_len) {
  QUEST_CHECK(batch >= 1 && seq_len >= 1, "scorer: bad batch {} or sequence length {}", batch, seq_len);
  x_.resize(size_t(batch * seq_len));
  y_.resize(size_t(batch * seq_len));
  losses_.resize(size_t(batch * seq_len));
}

ModelScorer::ModelScorer(Model& model, int64_t batch)
    : ModelScorer([&model](const int32_t* x, const int32_t* y, int64_t B, int64_t T,
                           float* losses) { model.forward_loss(x, y, B, T, losses); },
                  batch, model.config().seq_len) {
  QUEST_CHECK(batch <= model.batch(), "scorer: batch {} out of [1, {}]", batch, model.batch());
}

std::vector<double> ModelScorer::score(const std::vector<LoglikRequest>& requests) {
  const int64_t T_max = seq_len_;
  // Each request as (tokens after truncation, continuation targets counted from the end).
  struct Seq {
    size_t index;
    std::vector<int32_t> tokens;
    int64_t n_cont;
  };
  std::vector<Seq> seqs;
  for (size_t i = 0; i < requests.size(); ++i) {
    const auto& r = requests[i];
    QUEST_CHECK(!r.context.empty(), "scorer: request {} has an empty context", i);
    std::vector<int32_t> s(r.context);
    s.insert(s.end(), r.continuation.begin(), r.continuation.end());
    if (int64_t(s.size()) > T_max + 1) s.erase(s.begin(), s.end() - (T_max + 1));
    // After truncation at most len - 1 targets exist.
    const int64_t n_cont = std::min<int64_t>(int64_t(r.continuation.size()), int64_t(s.size()) - 1);
    seqs.push_back({i, std::move(s), n_cont});
  }
  std::vector<size_t> order(seqs.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return seqs[a].tokens.size() > seqs[b].tokens.size(); });
  std::vector<double> out(requests.size(), 0.0);
  for (size_t first = 0; first < order.size(); first += size_t(batch_)) {
    const size_t n = std::min(order.size() - first, size_t(batch_));
    const int64_t T = int64_t(seqs[order[first]].tokens.size()) - 1;  // the longest of the batch
    if (T < 1) continue;  // one-token requests only: nothing to score (their sums stay 0)
    std::fill(x_.begin(), x_.end(), 0);
    std::fill(y_.begin(), y_.end(), 0);
    for (size_t b = 0; b < n; ++b) {
      const auto& s = seqs[order[first + b]].tokens;
      const int64_t len = int64_t(s.size()) - 1;
      std::copy(s.begin(), s.begin() + len, x_.begin() + int64_t(b) * T);
      std::copy(s.begin() + 1, s.end(), y_.begin() + int64_t(b) * T);
    }
    token_losses_(x_.data(), y_.data(), int64_t(n), T, losses_.data());
    for (size_t b = 0; b < n; ++b) {
      const Seq& s = seqs[order[first + b]];
      const int64_t len = int64_t(s.tokens.size()) - 1;
      double sum = 0.0;
      for (int64_t t = len - s.n_cont; t < len; ++t) sum += losses_[size_t(int64_t(b) * T + t)];
      out[s.index] = -sum;
    }
  }
  return out;
}

}  // namespace quest
