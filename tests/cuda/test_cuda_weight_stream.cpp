// The weights' own work on a second stream (the quantization after each optimizer step, the
// weight gradient's mask pass; src/ops/cuda/stream_event.h): CUDA engine steps with it on and off
// (QUEST_WEIGHT_STREAM=0 at construction) give the same losses, gradient norms, parameters and
// learned quantizer parameters, bit for bit. Two micro-batches a step (the mask pass accumulates
// into gradients the next micro-batch adds to), a learned weight step (LSQ, initialized from the
// weights in prepare_weight, on that stream), and a checkpoint's state read between steps.
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
  ModelConfig m;
  m.n_layer = 2;
  m.d_model = 256;
  m.head_dim = 64;
  m.vocab_size = 1000;
  m.seq_len = 64;
  constexpr int64_t B = 4, T = 64;
  Rng rng(5);
  std::vector<int32_t> x(size_t(2 * B * T)), y(size_t(2 * B * T));
  for (auto& t : x) t = int32_t(rng.below(1000));
  for (auto& t : y) t = int32_t(rng.below(1000));
  for (const char* q : {"w=quest:4,a=quest:4", "w=quest:2,a=quest:8", "w=lsq:4,a=quest:4"}) {
    SCOPED_TRACE(q);
    std::vector<double> out[2];
    std::vector<float> params[2], learned[2];
    for (const int side : {0, 1}) {
      if (!side) setenv("QUEST_WEIGHT_STREAM", "0", 1);
      auto e = make_engine("cuda", m, QuantConfig::parse(q), AdamWConfig{}, B);
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
    ASSERT_EQ(out[0].size(), out[1].size());
    for (size_t i = 0; i < out[0].size(); ++i) EXPECT_EQ(out[1][i], out[0][i]) << "value " << i;
    EXPECT_TRUE(cuda_test::bit_equal(params[1], params[0], "params"));
    EXPECT_TRUE(cuda_test::bit_equal(learned[1], learned[0], "learned quantizer parameters"));
  }
}

}  // namespace
}  // namespace quest
