// KV-cache decoding gives the same tokens as full recomputation.
#include <gtest/gtest.h>

#include "core/rng.h"
#include "model/generate.h"
#include "model/tiny_model.h"

namespace quest {
namespace {

TEST(Generate, CachedAndUncachedDecodingAgree) {
  ModelConfig cfg = test::tiny_config();
  cfg.seq_len = 16;
  Model model(cfg, 1);
  model.init_weights(11);
  const std::vector<int32_t> prompt = {5, 9, 2};
  for (float temperature : {0.0f, 1.0f}) {
    SampleOptions opt;
    opt.temperature = temperature;
    opt.top_k = 10;
    opt.seed = 4;
    opt.max_new_tokens = 40;  // past the 16-token context: exercises the window shift too
    opt.use_cache = true;
    const auto cached = generate(model, prompt, opt);
    opt.use_cache = false;
    const auto uncached = generate(model, prompt, opt);
    EXPECT_EQ(cached, uncached) << "temperature " << temperature;
    EXPECT_EQ(cached.size(), 40u);
  }
}

TEST(Generate, CachedLogitsMatchFullForward) {
  ModelConfig cfg = test::tiny_config();
  cfg.seq_len = 12;
  Model model(cfg, 1);
  model.init_weights(5);
  std::vector<int32_t> tokens = {1, 7, 3, 9, 30, 2, 8, 8, 40, 0};
  KvCacheDecoder dec(model, cfg.seq_len);
  std::vector<float> a(cfg.vocab_size), b(cfg.vocab_size);
  dec.feed(tokens.data(), 4, a.data());
  for (size_t n = 5; n <= tokens.size(); ++n) {
    dec.feed(tokens.data() + n - 1, 1, a.data());
    model.last_logits(tokens.data(), int64_t(n), b.data());
    for (int64_t v = 0; v < cfg.vocab_size; ++v) ASSERT_NEAR(a[v], b[v], 1e-4f) << n << " " << v;
  }
}

TEST(Generate, SamplingRespectsTopKAndSeed) {
  std::vector<float> logits = {0.f, 5.f, 4.f, -1.f, 4.5f};
  SampleOptions opt;
  opt.temperature = 1.0f;
  opt.top_k = 2;
  Rng rng(1);
  for (int i = 0; i < 200; ++i) {
    auto l = logits;
    const int32_t t = sample_token(l.data(), 5, opt, rng);
    ASSERT_TRUE(t == 1 || t == 4) << t;
  }
  opt.temperature = 0;
  auto l = logits;
  EXPECT_EQ(sample_token(l.data(), 5, opt, rng), 1);
}

}  // namespace
}  // namespace quest
