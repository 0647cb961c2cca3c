// The producer-fused input quantizers (issue 9 item 3) in training: a few CUDA engine steps with
// the fused passes on and off (QUEST_FUSED_PRODUCERS=0 at construction) give the same losses,
// gradient norms and parameters, bit for bit. Int8 product and w2's shared input on (defaults).
// The graph folds the residual adds into the next RMSNorm (add_rmsnorm_linear_forward): off, the
// add runs on its own; on, inside the quantizer's kernel or, unquantized, the add_rmsnorm kernel.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <vector>

#include "core/rng.h"
#include "cuda_test_util.h"
#include "train/engine.h"

namespace quest {
namespace {

TEST(CudaFusedEngine, SameStepsAsPlainOps) {
  QUEST_REQUIRE_CUDA();
  const ModelConfig m = cuda_test::engine_test_config();
  constexpr int64_t B = 4, T = 64;
  Rng rng(3);
  const auto x = cuda_test::rand_ints(rng, size_t(B * T), 0, 1000);
  const auto y = cuda_test::rand_ints(rng, size_t(B * T), 0, 1000);
  // "": the unquantized (bf16) model, where only the residual add folds into RMSNorm.
  for (const char* q : {"w=quest:4,a=quest:4", "w=quest:1,a=quest:1", "w=quest:8,a=quest:8", ""}) {
    SCOPED_TRACE(q);
    std::vector<double> out[2];
    std::vector<float> params[2];
    for (const int fused : {0, 1}) {
      if (!fused) setenv("QUEST_FUSED_PRODUCERS", "0", 1);
      auto e = make_engine("cuda", m, *q ? QuantConfig::parse(q) : QuantConfig::none(),
                           AdamWConfig{}, B);
      unsetenv("QUEST_FUSED_PRODUCERS");
      e->init_weights(7);
      for (int s = 0; s < 3; ++s) {
        e->zero_grads();
        out[fused].push_back(e->forward_backward(x.data(), y.data(), B, T, 1.0f / float(B * T)));
        out[fused].push_back(e->step(1e-3));
      }
      out[fused].push_back(e->forward_loss(x.data(), y.data(), B, T));
      params[fused] = e->params();
    }
    ASSERT_EQ(out[0].size(), out[1].size());
    for (size_t i = 0; i < out[0].size(); ++i) EXPECT_EQ(out[1][i], out[0][i]) << "value " << i;
    EXPECT_TRUE(cuda_test::bit_equal(params[1], params[0], "params"));
  }
}

}  // namespace
}  // namespace quest
