#include "model/generate.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "core/error.h"
#include "ops/cpu_ops.h"

namespace quest {

KvCacheDecoder::KvCacheDecoder(Model& model, int64_t max_len) : model_(model), max_len_(max_len) {
  const auto& c = model.config();
  QUEST_CHECK(max_len >= 1 && max_len <= c.seq_len, "decoder: max_len {} out of [1, {}]", max_len,
              c.seq_len);
  const int64_t d = c.d_model, H = c.hidden_dim(), n = max_len;
  k_cache_.assign(c.n_layer * n * d, 0.0f);
  v_cache_.assign(c.n_layer * n * d, 0.0f);
  for (auto* v : {&x_, &ln_, &q_, &att_, &tmp_}) v->assign(n * d, 0.0f);
  qkv_.assign(n * 3 * d, 0.0f);
  for (auto* v : {&a_, &b_, &g_}) v->assign(n * H, 0.0f);
  logits_.assign(c.padded_vocab(), 0.0f);
}

void KvCacheDecoder::feed(const int32_t* tokens, int64_t n, float* logits) {
  const auto& c = model_.config();
  QUEST_CHECK(n >= 1 && length_ + n <= max_len_, "decoder: {} + {} tokens exceed the cache of {}",
              length_, n, max_len_);
  for (int64_t i = 0; i < n; ++i)
    QUEST_CHECK(tokens[i] >= 0 && tokens[i] < c.vocab_size, "token id {} out of the vocabulary",
                tokens[i]);
  const int64_t d = c.d_model, H = c.hidden_dim(), nh = c.n_head(), hd = c.head_dim;
  const auto& layout = model_.layout();
  cpu::embedding_forward(x_.data(), tokens, model_.param(layout[0]), n, d);
  for (int64_t l = 0; l < c.n_layer; ++l) {
    const ParamTensor* t = &layout[1 + 7 * l];
    LayerLinears& lin = model_.linears()[l];
    float* kc = k_cache_.data() + l * max_len_ * d;
    float* vc = v_cache_.data() + l * max_len_ * d;
    cpu::rmsnorm_forward(ln_.data(), tmp_.data(), x_.data(), model_.param(t[0]), n, d, c.norm_eps);
    lin.qkv.forward(ln_.data(), qkv_.data(), n);
    cpu::rope_forward(qkv_.data(), 1, n, nh, hd, c.rope_theta, length_);
    for (int64_t i = 0; i < n; ++i) {
      const float* row = qkv_.data() + i * 3 * d;
      std::memcpy(q_.data() + i * d, row, sizeof(float) * d);
      std::memcpy(kc + (length_ + i) * d, row + d, sizeof(float) * d);
      std::memcpy(vc + (length_ + i) * d, row + 2 * d, sizeof(float) * d);
    }
    cpu::attention_forward_cached(att_.data(), q_.data(), kc, vc, n, length_, nh, hd);
    lin.wo.forward(att_.data(), tmp_.data(), n);
    for (int64_t i = 0; i < n * d; ++i) x_[i] += tmp_[i];
    cpu::rmsnorm_forward(ln_.data(), tmp_.data(), x_.data(), model_.param(t[3]), n, d, c.norm_eps);
    lin.w1.forward(ln_.data(), a_.data(), n);
    lin.w2.forward(ln_.data(), b_.data(), n);
    cpu::swiglu_forward(g_.data(), a_.data(), b_.data(), n * H);
    lin.w3.forward(g_.data(), tmp_.data(), n);
    for (int64_t i = 0; i < n * d; ++i) x_[i] += tmp_[i];
  }
  // Only the last position's logits are needed.
  const float* last = x_.data() + (n - 1) * d;
  cpu::rmsnorm_forward(ln_.data(), tmp_.data(), last, model_.param(model_.tensor("final_norm")), 1, d,
                       c.norm_eps);
  cpu::matmul_forward(logits_.data(), ln_.data(), model_.param(layout.back()), 1, d, c.padded_vocab());
  std::memcpy(logits, logits_.data(), sizeof(float) * c.vocab_size);
  length_ += n;
}

int32_t sample_token(float* logits, int64_t V, const SampleOptions& opt, Rng& rng) {
  if (opt.temperature <= 0.0f) return static_cast<int32_t>(std::max_element(logits, logits + V) - logits);
  std::vector<int32_t> idx(V);
  std::iota(idx.begin(), idx.end(), 0);
  int64_t k = (opt.top_k > 0 && opt.top_k < V) ? opt.top_k : V;
  // Ties broken by token id, so the draw does not depend on the sort implementation.
  auto by_logit = [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), by_logit);
  const double mx = logits[idx[0]];
  std::vector<double> p(k);
  double sum = 0.0;
  for (int64_t i = 0; i < k; ++i) sum += p[i] = std::exp((logits[idx[i]] - mx) / opt.temperature);
  double u = rng.uniform() * sum;
  for (int64_t i = 0; i < k; ++i) {
    if (u < p[i]) return idx[i];
    u -= p[i];
  }
  return idx[k - 1];
}

std::vector<int32_t> generate(Model& model, const std::vector<int32_t>& prompt,
                              const SampleOptions& opt, const std::function<void(int32_t)>& on_token) {
  QUEST_CHECK(!prompt.empty(), "generate: the prompt must hold at least one token");
  const auto& c = model.config();
  const int64_t ctx = c.seq_len;
  std::vector<int32_t> tokens = prompt;
  // Keep at most the last ctx tokens of the prompt.
  int64_t start = std::max<int64_t>(0, static_cast<int64_t>(tokens.size()) - ctx);
  std::vector<float> logits(c.vocab_size);
  Rng rng(opt.seed);
  KvCacheDecoder decoder(model, ctx);
  int64_t fed = start;  // tokens[start, fed) are in the cache
  std::vector<int32_t> out;
  for (int64_t step = 0; step < opt.max_new_tokens; ++step) {
    const int64_t len = static_cast<int64_t>(tokens.size());
    if (len - start > ctx) {  // context full: keep its last half
      start = len - ctx / 2;
      decoder.reset();
      fed = start;
    }
    if (opt.use_cache) {
      decoder.feed(tokens.data() + fed, len - fed, logits.data());
      fed = len;
    } else {
      model.last_logits(tokens.data() + start, len - start, logits.data());
    }
    const int32_t next = sample_token(logits.data(), c.vocab_size, opt, rng);
    tokens.push_back(next);
    out.push_back(next);
    if (on_token) on_token(next);
  }
  return out;
}

}  // namespace quest
