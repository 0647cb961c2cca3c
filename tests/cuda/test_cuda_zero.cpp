// The CUDA engine's data-parallel step (ZeRO-1 over NCCL, train/cuda_zero_adamw.h) on the one GPU
// a single machine lends: a job of one rank through NCCL must train bit for bit as the unsharded
// engine (same kernels on the same values), for plain and learned (LSQ) quantizers, and its
// gathered optimizer state and checkpoint round trip must be the unsharded engine's. Several
// ranks are the CPU tests' job (tests/dist, the same ZeRO-1 logic over MPI) and the multi-GPU
// runs'.
#include <gtest/gtest.h>

#include <map>
#include <random>

#include "cuda_test_util.h"
#include "train/engine.h"
#ifdef QUEST_HAVE_NCCL
#include "dist/nccl/nccl_communicator.h"
#include "dist/single_communicator.h"
#endif

namespace quest {
namespace {

#ifdef QUEST_HAVE_NCCL

ModelConfig small_model() {
  ModelConfig m;
  m.preset = "custom";
  m.n_layer = 2;
  m.d_model = 128;  // one Hadamard block
  m.head_dim = 64;
  m.vocab_size = 256;
  m.seq_len = 32;
  return m;
}

struct Batch {
  std::vector<int32_t> x, y;
};

Batch random_batch(std::mt19937& rng, int64_t B, int64_t T) {
  std::uniform_int_distribution<int32_t> tok(0, 255);
  Batch b{std::vector<int32_t>(size_t(B * T)), std::vector<int32_t>(size_t(B * T))};
  for (auto& t : b.x) t = tok(rng);
  for (auto& t : b.y) t = tok(rng);
  return b;
}

// `steps` optimizer steps of two accumulated micro-batches; returns the losses and the norms.
std::vector<double> train(Engine& e, int steps, int64_t B, int64_t T) {
  std::mt19937 rng(7);
  std::vector<double> out;
  for (int s = 0; s < steps; ++s) {
    e.zero_grads();
    for (int k = 0; k < 2; ++k) {
      const Batch b = random_batch(rng, B, T);
      out.push_back(e.forward_backward(b.x.data(), b.y.data(), B, T, 1.0f / float(2 * B * T)));
    }
    out.push_back(e.step(2e-3));
  }
  return out;
}

std::map<std::string, std::vector<float>> by_name(std::vector<StateArray> s) {
  std::map<std::string, std::vector<float>> out;
  for (auto& a : s) out[a.name] = std::move(a.data);
  return out;
}

class CudaZeroTest : public ::testing::TestWithParam<const char*> {};

TEST_P(CudaZeroTest, OneRankOverNcclTrainsAsTheUnshardedEngine) {
  QUEST_REQUIRE_CUDA();
  const ModelConfig m = small_model();
  const QuantConfig q = QuantConfig::parse(GetParam());
  AdamWConfig adamw;
  const int64_t B = 4, T = m.seq_len;

  auto plain = make_engine("cuda", m, q, adamw, B);
  plain->init_weights(3);
  const std::vector<double> expected = train(*plain, 5, B, T);

  SingleCommunicator bootstrap;
  NcclCommunicator nccl(bootstrap, 60.0);
  auto sharded = make_engine("cuda", m, q, adamw, B);
  sharded->set_communicator(nccl);
  sharded->set_micro_batches(2);  // the last backward pass of each step reduces layer by layer
  sharded->init_weights(3);
  const std::vector<double> got = train(*sharded, 5, B, T);
  EXPECT_EQ(got, expected);
  EXPECT_EQ(sharded->adam_steps(), plain->adam_steps());

  // The whole state, gathered from the shard, is the unsharded engine's, bit for bit.
  const auto a = by_name(plain->state()), b = by_name(sharded->state());
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, data] : a) {
    ASSERT_TRUE(b.count(name)) << name;
    EXPECT_EQ(b.at(name), data) << name;
  }

  // A checkpoint of the sharded engine restores into it and the training goes on as the plain
  // engine's restored from the same state.
  Checkpoint ck;
  ck.header = {{"adam_step", plain->adam_steps()}};
  for (auto& s : plain->state()) ck.arrays[s.name] = s.data;
  auto plain2 = make_engine("cuda", m, q, adamw, B);
  plain2->restore(ck, true);
  auto sharded2 = make_engine("cuda", m, q, adamw, B);
  sharded2->set_communicator(nccl);
  // Four micro-batches announced, two run: no backward pass is the last one, so no region is
  // reduced early and step() reduce-scatters the whole gradients (the path without overlap).
  sharded2->set_micro_batches(4);
  sharded2->restore(ck, true);
  EXPECT_EQ(train(*sharded2, 2, B, T), train(*plain2, 2, B, T));
  EXPECT_EQ(sharded2->params(), plain2->params());
}

INSTANTIATE_TEST_SUITE_P(Quant, CudaZeroTest,
                         ::testing::Values("w=none,a=none", "w=hadamard-trust:4,a=hadamard-trust:4", "w=lsq:4,a=lsq:4"),
                         [](const auto& info) { return std::to_string(info.index); });

#else
TEST(CudaZeroTest, NeedsNccl) { GTEST_SKIP() << "built without NCCL"; }
#endif

}  // namespace
}  // namespace quest
