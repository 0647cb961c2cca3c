#pragma once
// A small model whose linear layers take every quantizer (K a multiple of 128 for the Hadamard
// transform), with seeded weights and token batches.
#include <memory>
#include <vector>

#include "core/rng.h"
#include "train/model_io.h"

namespace quest::test {

inline ModelConfig export_test_config() {
  ModelConfig c;
  c.n_layer = 2;
  c.d_model = 128;
  c.head_dim = 64;
  c.hidden = 256;
  c.vocab_size = 61;  // padded to 128 rows
  c.seq_len = 16;
  c.init_std = 0.05f;
  return c;
}

inline LoadedModel make_test_model(const std::string& quant, int64_t batch = 2, uint64_t seed = 1,
                                   ModelConfig cfg = export_test_config()) {
  LoadedModel m;
  m.quant = quant.empty() ? QuantConfig::none() : QuantConfig::parse(quant);
  m.tokenizer = "test-bytes";
  m.step = 42;
  m.model = std::make_unique<Model>(cfg, batch, quantized_linear_factory(m.quant));
  m.model->init_weights(seed);
  // Norm weights away from 1, so a wrong norm would show.
  Rng rng(seed + 100);
  for (const auto& t : m.model->layout())
    if (t.kind == ParamKind::Norm)
      for (int64_t i = 0; i < t.numel(); ++i) m.model->param(t)[i] = float(0.5 + rng.uniform());
  m.model->prepare_weights();
  return m;
}

struct TokenBatch {
  std::vector<int32_t> x, y;
  int64_t B, T;
};

inline TokenBatch random_tokens(const ModelConfig& c, int64_t B, uint64_t seed) {
  TokenBatch b{{}, {}, B, c.seq_len};
  Rng rng(seed);
  for (int64_t i = 0; i < B * c.seq_len; ++i) {
    b.x.push_back(int32_t(rng.below(uint64_t(c.vocab_size))));
    b.y.push_back(int32_t(rng.below(uint64_t(c.vocab_size))));
  }
  return b;
}

// Per-token losses of a batch.
inline std::vector<float> token_losses(Model& m, const TokenBatch& b) {
  std::vector<float> l(static_cast<size_t>(b.B * b.T));
  m.forward_loss(b.x.data(), b.y.data(), b.B, b.T, l.data());
  return l;
}

}  // namespace quest::test
