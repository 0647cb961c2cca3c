// The whole model's gradient against central finite differences of its loss, on a tiny config.
#include <gtest/gtest.h>

#include <cmath>

#include "core/error.h"
#include "core/rng.h"
#include "model/llama.h"
#include "model/tiny_model.h"

namespace quest {
namespace {

TEST(ModelGradient, MatchesFiniteDifferences) {
  const ModelConfig cfg = test::tiny_config();
  const int64_t B = 2, T = cfg.seq_len, N = B * T;
  Model model(cfg, B);
  model.init_weights(7);
  Rng rng(3);
  std::vector<int32_t> x(N), y(N);
  for (auto& t : x) t = int32_t(rng.below(cfg.vocab_size));
  for (auto& t : y) t = int32_t(rng.below(cfg.vocab_size));

  model.zero_grads();
  const float scale = 1.0f / float(N);
  model.forward_backward(x.data(), y.data(), B, T, scale);
  const std::vector<float> grad(model.grads().begin(), model.grads().end());

  auto loss = [&] { return model.forward_loss(x.data(), y.data(), B, T) / double(N); };
  int checked = 0;
  for (const auto& t : model.layout()) {
    // A few entries of every tensor; for the embedding, rows of tokens that occur in x.
    for (int k = 0; k < 6; ++k) {
      int64_t i = int64_t(rng.below(uint64_t(t.numel())));
      if (t.kind == ParamKind::Embedding) i = int64_t(x[rng.below(N)]) * t.cols + int64_t(rng.below(t.cols));
      if (t.kind == ParamKind::LmHead) i = int64_t(rng.below(cfg.vocab_size)) * t.cols + int64_t(rng.below(t.cols));
      float* w = model.param(t) + i;
      const float saved = *w;
      const float eps = 1e-2f;
      *w = saved + eps;
      model.prepare_weights();
      const double up = loss();
      *w = saved - eps;
      model.prepare_weights();
      const double down = loss();
      *w = saved;
      model.prepare_weights();
      const double fd = (up - down) / (2.0 * eps);
      const double an = grad[t.offset + i];
      EXPECT_NEAR(an, fd, 2e-4 + 3e-2 * std::abs(fd)) << t.name << "[" << i << "]";
      ++checked;
    }
  }
  EXPECT_GT(checked, 80);
  // The gradient is not trivially zero.
  double norm = 0;
  for (float g : grad) norm += double(g) * g;
  EXPECT_GT(norm, 1e-6);
}

TEST(ModelGradient, PaddedVocabularyRowsGetNoGradient) {
  const ModelConfig cfg = test::tiny_config();
  Model model(cfg, 1);
  model.init_weights(1);
  std::vector<int32_t> x = {1, 2, 3, 4, 5, 6}, y = {2, 3, 4, 5, 6, 7};
  model.zero_grads();
  model.forward_backward(x.data(), y.data(), 1, 6, 1.0f);
  const auto& lm = model.tensor("lm_head");
  for (int64_t r = cfg.vocab_size; r < cfg.padded_vocab(); ++r)
    for (int64_t c = 0; c < lm.cols; ++c) ASSERT_EQ(model.grad(lm)[r * lm.cols + c], 0.0f);
}

TEST(ModelGradient, AccumulatesOverMicroBatches) {
  const ModelConfig cfg = test::tiny_config();
  Model model(cfg, 2);
  model.init_weights(2);
  std::vector<int32_t> x(12), y(12);
  for (int i = 0; i < 12; ++i) x[i] = i % 50, y[i] = (i * 7) % 50;
  model.zero_grads();
  model.forward_backward(x.data(), y.data(), 2, 6, 0.5f);
  const std::vector<float> once(model.grads().begin(), model.grads().end());
  model.zero_grads();
  model.forward_backward(x.data(), y.data(), 1, 6, 0.5f);
  model.forward_backward(x.data() + 6, y.data() + 6, 1, 6, 0.5f);
  for (size_t i = 0; i < once.size(); ++i) ASSERT_NEAR(model.grads()[i], once[i], 1e-6f + 1e-4f * std::abs(once[i]));
}

TEST(ModelConfigTest, PresetsMatchThePaper) {
  EXPECT_NEAR(model_preset("30M").non_embedding_params() / 1e6, 30.48, 0.01);
  EXPECT_NEAR(model_preset("200M").non_embedding_params() / 1e6, 203.19, 0.01);
  EXPECT_NEAR(model_preset("800M").non_embedding_params() / 1e6, 822.15, 0.01);
  EXPECT_EQ(model_preset("30M").hidden_dim(), 1792);
  EXPECT_EQ(model_preset("430M").hidden_dim(), 4608);
  EXPECT_EQ(model_preset("30M").padded_vocab(), 50304);
  EXPECT_THROW(model_preset("31M"), Error);
  ModelConfig bad = model_preset("30M");
  bad.d_model = 600;  // not a multiple of head_dim
  EXPECT_THROW(bad.validate(), Error);
}

TEST(ModelInit, FollowsTheSpec) {
  ModelConfig cfg = test::tiny_config();
  cfg.init_std = 0.02f;
  cfg.d_model = 64;
  cfg.head_dim = 16;
  cfg.hidden = 64;
  Model model(cfg, 1);
  model.init_weights(0);
  auto stddev = [&](const std::string& name) {
    const auto& t = model.tensor(name);
    double s = 0;
    for (int64_t i = 0; i < t.numel(); ++i) s += double(model.param(t)[i]) * model.param(t)[i];
    return std::sqrt(s / double(t.numel()));
  };
  EXPECT_NEAR(stddev("layers.0.wqkv"), 0.02, 0.002);
  EXPECT_NEAR(stddev("layers.1.w3"), 0.02 / std::sqrt(4.0), 0.001);
  EXPECT_NEAR(stddev("layers.1.wo"), 0.02 / std::sqrt(4.0), 0.001);
  EXPECT_EQ(model.param(model.tensor("final_norm"))[3], 1.0f);
}

// The lm_head runs over row chunks of at most CpuBackend::kHeadChunkElements logits. With the
// GPT-2 vocabulary, 64 x 6 tokens need two chunks; 32 x 6 fit in one. The chunked micro-batch must
// give the losses and gradients of its two halves run separately.
TEST(ModelHead, RowChunksGiveWhatSeparateMicroBatchesGive) {
  ModelConfig cfg = test::tiny_config();
  cfg.vocab_size = 50257;
  ASSERT_GT(64 * cfg.seq_len * cfg.padded_vocab(), CpuBackend::kHeadChunkElements);
  ASSERT_LT(32 * cfg.seq_len * cfg.padded_vocab(), CpuBackend::kHeadChunkElements);
  const int64_t B = 64, T = cfg.seq_len, N = B * T;
  Rng rng(5);
  std::vector<int32_t> x(N), y(N);
  for (auto& t : x) t = int32_t(rng.below(cfg.vocab_size));
  for (auto& t : y) t = int32_t(rng.below(cfg.vocab_size));

  Model whole(cfg, B), halves(cfg, B / 2);
  whole.init_weights(11), halves.init_weights(11);
  whole.zero_grads(), halves.zero_grads();
  const float scale = 1.0f / float(N);
  const double loss = whole.forward_backward(x.data(), y.data(), B, T, scale);
  const double half_losses = halves.forward_backward(x.data(), y.data(), B / 2, T, scale) +
                             halves.forward_backward(x.data() + N / 2, y.data() + N / 2, B / 2, T, scale);
  EXPECT_NEAR(loss, half_losses, 1e-7 * std::abs(loss));  // fp32 sums, other blockings
  EXPECT_GT(loss, 0.0);
  for (const auto& t : whole.layout()) {
    double diff = 0, norm = 0;
    for (int64_t i = 0; i < t.numel(); ++i) {
      const double a = whole.grad(t)[i], b = halves.grad(t)[i];
      diff = std::max(diff, std::abs(a - b)), norm = std::max(norm, std::abs(b));
    }
    EXPECT_GT(norm, 0.0) << t.name;
    EXPECT_LE(diff, 1e-5 * norm) << t.name;
  }
}

}  // namespace
}  // namespace quest
