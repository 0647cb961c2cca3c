// The CUDA engine end to end through the trainer, on a real text slice (bytes of Moby Dick as
// tokens, tests/train/byte_corpus.h): it follows the CPU's loss curve, a resumed GPU run continues
// bit for bit, checkpoints cross backends both ways, and mask statistics come from the device.
#include <gtest/gtest.h>

#include <cmath>

#include "cuda_test_util.h"
#include "train/byte_corpus.h"
#include "train/resume_check.h"
#include "train/trainer.h"

namespace quest {
namespace {

// Small, but with the GPU kernels' shapes: d = 128 (one Hadamard block), head_dim 64, H = 512.
TrainConfig gpu_config(const test::TempDir& dir, const std::string& device, const char* quant) {
  TrainConfig c = test::byte_train_config(dir);
  c.model.d_model = 128;
  c.model.head_dim = 64;
  c.model.seq_len = 64;
  c.steps = 40;
  c.eval_windows = 32;
  c.out_dir = dir / ("run-" + device);
  c.device = device;
  c.quant = QuantConfig::parse(quant);
  return c;
}

class CudaTrainerTest : public test::ByteCorpusTest<200'000>, public ::testing::WithParamInterface<const char*> {};

// bf16 on the GPU against fp32 on the CPU from the same initialization and data: the validation
// losses after 40 steps agree within 2% (3.5% with the trust-masked 4-bit quantizer: bf16
// activations move some entries across grid and mask boundaries, and this small model at a high
// learning rate amplifies that; seen on the H100: 2.3%).
TEST_P(CudaTrainerTest, FollowsTheCpuLossCurve) {
  QUEST_REQUIRE_CUDA();
  Trainer cpu(gpu_config(dir_, "cpu", GetParam()));
  Trainer gpu(gpu_config(dir_, "cuda", GetParam()));
  const double start_cpu = cpu.evaluate().loss, start_gpu = gpu.evaluate().loss;
  EXPECT_NEAR(start_gpu, start_cpu, 2e-3 * start_cpu);
  const TrainSummary a = cpu.run(), b = gpu.run();
  EXPECT_LT(b.eval.loss, start_gpu - 1.0);
  const double tol = std::string(GetParam()).find("trust") != std::string::npos ? 0.035 : 0.02;
  EXPECT_NEAR(b.eval.loss, a.eval.loss, tol * a.eval.loss) << "cpu " << a.eval.loss << " gpu " << b.eval.loss;
}

// N steps + checkpoint + resume + N steps equals 2N steps, bit for bit (the GPU kernels are
// deterministic; the learned quantizer parameters and their moments travel in the checkpoint).
TEST_P(CudaTrainerTest, ResumeContinuesBitForBit) {
  QUEST_REQUIRE_CUDA();
  TrainConfig c = gpu_config(dir_, "cuda", GetParam());
  c.steps = 8;
  c.grad_accum = 2;
  EXPECT_EQ(test::params_differing_after_resume(c, dir_, 4), 0u);
}

// A checkpoint written on one backend loads on the other: same parameters, and the same
// validation loss up to bf16 compute.
TEST_P(CudaTrainerTest, CheckpointsCrossBackends) {
  QUEST_REQUIRE_CUDA();
  for (const auto& [from, to] : {std::pair<std::string, std::string>{"cpu", "cuda"}, {"cuda", "cpu"}}) {
    TrainConfig c = gpu_config(dir_, from, GetParam());
    c.steps = 6;
    Trainer a(c);
    a.run();
    const std::string ck = dir_ / ("from-" + from + ".bin");
    a.save_checkpoint(ck);
    const double loss_a = a.evaluate().loss;

    TrainConfig d = gpu_config(dir_, to, GetParam());
    d.steps = 6;
    d.resume = ck;
    d.out_dir = dir_ / ("to-" + to);
    Trainer b(d);
    EXPECT_EQ(b.step(), 6);
    EXPECT_EQ(b.params(), a.params()) << from << " -> " << to;
    EXPECT_NEAR(b.evaluate().loss, loss_a, 3e-3 * loss_a) << from << " -> " << to;
  }
}

INSTANTIATE_TEST_SUITE_P(Quant, CudaTrainerTest, ::testing::Values("w=none,a=none", "w=hadamard-trust:4,a=hadamard-trust:4",
                                                                   "w=lsq:4,a=lsq:4"),
                         [](const auto& info) {
                           std::string s = info.param;
                           for (char& ch : s)
                             if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           return s;
                         });

// The GPU's mask statistics equal the CPU's for (nearly) the same weights: one step at a vanishing
// learning rate, so the fp32 master weights, their codes and masks agree; the input masks see bf16
// activations on the GPU, so those agree loosely.
using CudaMaskTest = test::ByteCorpusTest<200'000>;
TEST_F(CudaMaskTest, MaskStatisticsMatchTheCpu) {
  QUEST_REQUIRE_CUDA();
  nlohmann::json stats[2];
  int i = 0;
  for (const char* device : {"cpu", "cuda"}) {
    TrainConfig c = gpu_config(dir_, device, "w=hadamard-trust:4,a=hadamard-trust:4");
    c.steps = 2;
    c.schedule.peak_lr = 1e-12;
    Trainer t(c);
    t.run(1);
    t.engine().mask_statistics();
    t.run();
    stats[i++] = t.engine().mask_statistics();
  }
  const auto& cpu = stats[0];
  const auto& gpu = stats[1];
  ASSERT_FALSE(gpu.is_null());
  ASSERT_EQ(gpu["layers"].size(), cpu["layers"].size());
  EXPECT_GT(gpu["mean_w_masked"].get<double>(), 0.0);
  EXPECT_GT(gpu["mean_x_masked"].get<double>(), 0.0);
  for (const auto& [name, rec] : cpu["layers"].items()) {
    const auto& g = gpu["layers"][name];
    EXPECT_NEAR(g["w_masked"].get<double>(), rec["w_masked"].get<double>(), 1e-4) << name;
    EXPECT_NEAR(g["x_masked"].get<double>(), rec["x_masked"].get<double>(),
                0.05 * rec["x_masked"].get<double>() + 1e-4) << name;
    ASSERT_TRUE(g.contains("w_persistence")) << name;
    EXPECT_NEAR(g["w_persistence"].get<double>(), rec["w_persistence"].get<double>(), 1e-3) << name;
  }
}

}  // namespace
}  // namespace quest
