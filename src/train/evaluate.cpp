#include "train/evaluate.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "data/sampler.h"

namespace quest {

EvalResult evaluate_split(Model& model, const TokenDataset& data, int64_t batch, int64_t max_windows) {
  return evaluate_split(
      [&model](const int32_t* x, const int32_t* y, int64_t B, int64_t T) { return model.forward_loss(x, y, B, T); },
      model.config().seq_len, data, batch, max_windows);
}

EvalResult evaluate_split(const LossSum& loss_sum, int64_t T, const TokenDataset& data, int64_t batch,
                          int64_t max_windows, Communicator* comm) {
  ValidationWindows windows(data, T, uint64_t(max_windows));
  std::vector<int32_t> x(batch * T), y(batch * T);
  const uint64_t rank = comm ? uint64_t(comm->rank()) : 0, world = comm ? uint64_t(comm->size()) : 1;
  double sum = 0.0;
  for (uint64_t first = rank * batch; first < windows.count(); first += world * batch) {
    const int64_t n = std::min<int64_t>(batch, int64_t(windows.count() - first));
    windows.get_batch(first, n, x.data(), y.data());
    sum += loss_sum(x.data(), y.data(), n, T);
  }
  if (comm) comm->all_reduce_sum(&sum, 1);
  EvalResult r;
  r.windows = int64_t(windows.count());
  r.tokens = r.windows * T;
  r.loss = sum / double(r.tokens);
  r.perplexity = std::exp(r.loss);
  if (const auto& m = data.meta(); m && m->text_bytes && m->tokens && *m->text_bytes > 0)
    r.bits_per_byte = r.loss / std::log(2.0) * double(*m->tokens) / double(*m->text_bytes);
  return r;
}

}  // namespace quest
