// The weights' own work on a side stream (each weight's quantization after the optimizer step,
// the weight gradients: dW products, mask passes, the lm_head's dW; src/ops/cuda/side_stream.h):
// CUDA engine steps with it on (default and at a lower priority than the main stream) and off
// (QUEST_WEIGHT_STREAM=0 at construction) give the same losses, gradient norms, parameters and
// learned quantizer parameters, bit for bit. Two micro-batches a step (the side accumulates into
// gradients the next micro-batch adds to, and reads dY buffers the main stream rewrites), a
// learned weight step (LSQ, initialized from the weights in prepare_weight, on the side), the
// unquantized model (its plain dW products there too), and a checkpoint's state between steps.
#include <gtest/gtest.h>

#include <cstdlib>
#include <vector>

#include "core/rng.h"
#include "cuda_test_util.h"
#include "train/engine.h"

namespace quest {
namespace {

TEST(CudaWeightStream, SameStepsAsOneStream) {
  QUEST_REQUIRE_CUDA();
  const ModelConfig m = cuda_test::engine_test_config();
  constexpr int64_t B = 4, T = 64;
  Rng rng(5);
  const auto x = cuda_test::rand_ints(rng, size_t(2 * B * T), 0, 1000);  // two micro-batches
  const auto y = cuda_test::rand_ints(rng, size_t(2 * B * T), 0, 1000);
  for (const char* q : {"w=quest:4,a=quest:4", "w=quest:2,a=quest:8", "w=lsq:4,a=quest:4", ""}) {
    SCOPED_TRACE(q);
    std::vector<double> out[3];
    std::vector<float> params[3], learned[3];
    for (const int side : {0, 1, 2}) {  // off, on, on at a lower priority
      if (side != 1) setenv("QUEST_WEIGHT_STREAM", side == 0 ? "0" : "low", 1);
      auto e = make_engine("cuda", m, *q ? QuantConfig::parse(q) : QuantConfig::none(), AdamWConfig{}, B);
      unsetenv("QUEST_WEIGHT_STREAM");
      e->init_weights(11);
      e->set_micro_batches(2);
      for (int s = 0; s < 3; ++s) {
        e->zero_grads();
        for (int mb = 0; mb < 2; ++mb)
          out[side].push_back(e->forward_backward(x.data() + mb * B * T, y.data() + mb * B * T, B, T,
                                                  0.5f / float(B * T)));
        out[side].push_back(e->step(1e-3));
        for (const auto& a : e->state())
          if (a.name.rfind("quant.", 0) == 0) learned[side].insert(learned[side].end(), a.data.begin(), a.data.end());
      }
      out[side].push_back(e->forward_loss(x.data(), y.data(), B, T));
      params[side] = e->params();
    }
    for (int side : {1, 2}) {
      SCOPED_TRACE(side == 1 ? "side stream" : "side stream, low priority");
      ASSERT_EQ(out[side].size(), out[0].size());
      for (size_t i = 0; i < out[0].size(); ++i) EXPECT_EQ(out[side][i], out[0][i]) << "value " << i;
      EXPECT_TRUE(cuda_test::bit_equal(params[side], params[0], "params"));
      EXPECT_TRUE(cuda_test::bit_equal(learned[side], learned[0], "learned quantizer parameters"));
    }
  }
}

}  // namespace
}  // namespace quest
