// The CPU engine for evaluation: Engine::forward_loss's per-token losses are Model's, bit for bit,
// at any B <= batch and T <= seq_len, and sum to the returned total; Engine::load_model takes a
// model's weights, learned quantizer parameters and fixed product weights (a packed export's), so
// the engine computes exactly what the model does; a model of another shape or quantization is
// refused.
#include <gtest/gtest.h>

#include <cctype>
#include <cmath>
#include <string>
#include <vector>

#include "core/error.h"
#include "export/export_test_util.h"
#include "train/cpu_engine.h"

namespace quest {
namespace {

// B x T tokens, B and T not the planned ones (T odd).
test::TokenBatch short_batch(const ModelConfig& c, int64_t B, int64_t T, uint64_t seed) {
  ModelConfig shorter = c;
  shorter.seq_len = T;
  return test::random_tokens(shorter, B, seed);
}

std::vector<float> losses_of(Engine& e, const test::TokenBatch& b, double* total) {
  std::vector<float> l(size_t(b.B * b.T), NAN);
  *total = e.forward_loss(b.x.data(), b.y.data(), b.B, b.T, l.data());
  return l;
}

class CpuEngineEval : public ::testing::TestWithParam<const char*> {};

TEST_P(CpuEngineEval, PerTokenLossesAreTheModelsAndSumToTheTotal) {
  LoadedModel m = test::make_test_model(GetParam(), 4);
  const ModelConfig& c = m.model->config();
  // A first forward on other tokens initializes the learned input quantizers (LSQ, PACT): the
  // engine must take those values, not initialize its own from the tokens compared below.
  test::token_losses(*m.model, test::random_tokens(c, 4, 9));
  CpuEngine engine(c, m.quant, AdamWConfig{}, 4);
  engine.load_model(*m.model);

  const auto b = short_batch(c, 3, 11, 5);
  std::vector<float> expected(size_t(b.B * b.T));
  const double expected_total = m.model->forward_loss(b.x.data(), b.y.data(), b.B, b.T, expected.data());
  double total = 0;
  const auto got = losses_of(engine, b, &total);
  EXPECT_EQ(got, expected);
  EXPECT_EQ(total, expected_total);
  double sum = 0;
  for (float l : got) sum += l;
  EXPECT_NEAR(total, sum, 1e-9 * std::fabs(sum));
  EXPECT_EQ(engine.forward_loss(b.x.data(), b.y.data(), b.B, b.T), total);  // without per-token output
}

TEST_P(CpuEngineEval, LoadModelKeepsFixedProductWeights) {
  LoadedModel m = test::make_test_model(GetParam(), 2);
  const ModelConfig& c = m.model->config();
  const auto b = short_batch(c, 2, 13, 6);
  const auto prepared = test::token_losses(*m.model, b);
  // Product weights that quantizing the master weights does not give (each layer's own, scaled),
  // installed as the packed-export loader installs its decoded codes.
  for (auto& [name, op] : m.model->named_linears()) {
    std::vector<float> w(op->product_weight(), op->product_weight() + op->in_features() * op->out_features());
    for (float& v : w) v *= 0.9f;
    op->set_product_weight(w.data());
    EXPECT_TRUE(op->product_weight_is_fixed());
  }
  const auto fixed = test::token_losses(*m.model, b);
  ASSERT_NE(fixed, prepared);  // the test sees whether the fixed weights were taken

  CpuEngine engine(c, m.quant, AdamWConfig{}, 2);
  engine.load_model(*m.model);
  double total = 0;
  EXPECT_EQ(losses_of(engine, b, &total), fixed);
  // prepare_weights ends the fixed weight: the master weights are quantized again.
  m.model->prepare_weights();
  for (auto& [name, op] : m.model->named_linears()) EXPECT_FALSE(op->product_weight_is_fixed());
  EXPECT_EQ(test::token_losses(*m.model, b), prepared);
}

INSTANTIATE_TEST_SUITE_P(Quant, CpuEngineEval,
                         ::testing::Values("", "w=quest:4,a=quest:4", "w=quest:4,a=quest:4,form=full", "w=lsq:4,a=lsq:4"),
                         [](const auto& info) {
                           std::string n = info.param;
                           if (n.empty()) n = "unquantized";
                           for (char& ch : n)
                             if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           return n;
                         });

TEST(CpuEngineLoad, RefusesAnotherShapeOrQuantization) {
  LoadedModel m = test::make_test_model("w=quest:4,a=quest:4", 1);
  auto refused = [&](Engine& e, const std::string& words) {
    try {
      e.load_model(*m.model);
      ADD_FAILURE() << "accepted";
    } catch (const Error& err) {
      EXPECT_NE(std::string(err.what()).find(words), std::string::npos) << err.what();
    }
  };
  CpuEngine unquantized(m.model->config(), QuantConfig::none(), AdamWConfig{}, 1);
  refused(unquantized, "quantized as");
  ModelConfig wider = m.model->config();
  wider.hidden = 384;
  CpuEngine other_shape(wider, m.quant, AdamWConfig{}, 1);
  refused(other_shape, "configuration");
}

}  // namespace
}  // namespace quest
