// Quantization-aware training end to end (issue 3): every quantizer trains, checkpoints record and
// guard the quantization, LSQ resumes bit for bit, mask statistics reach the log, and the gradient
// alignment behaves as the paper's figure 2 says. Bytes of Moby Dick as tokens (vocabulary 256), a
// model of width 128 so that the Hadamard quantizers' K % 128 == 0 holds in every layer.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/file_io.h"
#include "core/log.h"
#include "data/shard.h"
#include "data/temp_dir.h"
#include "train/byte_corpus.h"
#include "train/checkpoint.h"
#include "train/grad_alignment.h"
#include "train/model_io.h"
#include "train/trainer.h"

namespace quest {
namespace {

using test::write_byte_shards;

TrainConfig quant_config(const test::TempDir& dir, const std::string& quant) {
  TrainConfig c = test::byte_train_config(dir);
  c.model.n_layer = 1;
  c.model.d_model = 128;
  c.model.head_dim = 64;
  c.model.hidden = 256;
  c.quant = QuantConfig::parse(quant);
  c.batch_size = 4;
  c.steps = 6;
  c.seed = 7;
  c.eval_windows = 8;
  return c;
}

std::vector<nlohmann::json> read_log(const std::string& path, const std::string& type) {
  std::ifstream in(path);
  std::vector<nlohmann::json> out;
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line);
    if (j.at("type") == type) out.push_back(std::move(j));
  }
  return out;
}

std::vector<float> learned_values(Model& model) {
  std::vector<float> out;
  for (auto& [name, op] : model.named_linears())
    for (auto& lp : op->learned_params()) out.insert(out.end(), lp.value.begin(), lp.value.end());
  return out;
}

size_t count_differing(std::span<const float> a, std::span<const float> b) {
  EXPECT_EQ(a.size(), b.size());
  size_t n = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) n += a[i] != b[i];
  return n;
}

using QuantTrainingTest = test::ByteCorpusTest<120'000>;

// ------------------------------------------------------------------------------------------------
// Every quantizer kind trains.

TEST_F(QuantTrainingTest, EveryQuantizerKindTrainsWithFiniteLoss) {
  const std::vector<std::string> configs = {
      "w=ste:4,a=ste:4",
      "w=clip:4,a=clip:4",
      "w=trust:4,a=trust:4",
      "w=quest:4,a=quest:4",
      "w=quest:4,a=quest:4,form=full",
      "w=hadamard-clip:4,a=hadamard-clip:4",
      "w=hadamard-ste:4,a=hadamard-ste:4",
      "w=lsq:4,a=lsq:4",
      "w=pact:4,a=pact:4",
      "w=fp4,a=fp4",
      "w=hadamard-fp4,a=hadamard-fp4",
      "w=sparse48:4,a=trust:4",
      "w=hadamard-sparse48:4,a=quest:4",
      "w=quest:1,a=quest:1",
      "w=quest:2,a=quest:2",
      "w=lsq:2,a=pact:3",
      "w=quest:4",  // weight-only
      "w=none,a=quest:8",
  };
  for (const auto& q : configs) {
    SCOPED_TRACE(q);
    TrainConfig c = quant_config(dir_, q);
    c.steps = 4;
    c.out_dir = dir_ / "kinds";
    Trainer trainer(c);
    TrainSummary s;
    ASSERT_NO_THROW(s = trainer.run());
    EXPECT_EQ(s.steps, 4);
    EXPECT_TRUE(std::isfinite(s.train_loss));
    EXPECT_TRUE(std::isfinite(s.eval.loss));
    // Still near the uniform loss ln 256 after 4 steps, not blown up.
    EXPECT_LT(s.eval.loss, std::log(256.0) + 1.0);
    size_t non_finite = 0;
    for (float p : trainer.model().params()) non_finite += !std::isfinite(p);
    EXPECT_EQ(non_finite, 0u);
    for (float v : learned_values(trainer.model())) EXPECT_TRUE(std::isfinite(v) && v != 0) << v;
  }
}

TEST_F(QuantTrainingTest, QuestW4A4LossFallsClearly) {
  TrainConfig c = quant_config(dir_, "w=quest:4,a=quest:4");
  c.steps = 60;
  c.batch_size = 8;
  Trainer trainer(c);
  const double start = trainer.evaluate().loss;
  EXPECT_NEAR(start, std::log(256.0), 0.3);
  const TrainSummary s = trainer.run();
  EXPECT_LT(s.eval.loss, start - 1.5) << "start " << start << " end " << s.eval.loss;
  EXPECT_LT(s.eval.loss, unigram_entropy(trainer.train_data()));
}

TEST_F(QuantTrainingTest, LsqTrainsOnWhenAdamCarriesAStepThroughZero) {
  // AdamW moves each scalar by about lr per step: at lr 1e-2 the small weight steps of the
  // out-projections (init about 0.002) cross zero within a few steps. Training must go on.
  TrainConfig c = quant_config(dir_, "w=lsq:4,a=lsq:4");
  c.steps = 30;
  c.schedule.peak_lr = 1e-2;
  Trainer trainer(c);
  TrainSummary s;
  ASSERT_NO_THROW(s = trainer.run());
  EXPECT_TRUE(std::isfinite(s.eval.loss));
  EXPECT_LT(s.eval.loss, std::log(256.0) - 0.5);
  int negative = 0;
  for (float v : learned_values(trainer.model())) negative += v < 0;
  EXPECT_GT(negative, 0) << "no step crossed zero: the test no longer exercises the crossing";
}

// ------------------------------------------------------------------------------------------------
// Checkpoints record the quantization and guard it.

TEST_F(QuantTrainingTest, CheckpointRecordsQuantizationAndLearnedParams) {
  TrainConfig c = quant_config(dir_, "w=lsq:4,a=lsq:4");
  c.steps = 2;
  Trainer trainer(c);
  trainer.run();
  const Checkpoint ck = load_checkpoint(c.out_dir + "/checkpoint.bin");
  EXPECT_TRUE(ck.header.at("quant").get<QuantConfig>().same_quantization(c.quant));
  for (const char* layer : {"wqkv", "wo", "w1", "w2", "w3"})
    for (const char* role : {"weight", "input"}) {
      const std::string name = std::string("quant.layers.0.") + layer + "." + role + ".lsq_step";
      ASSERT_TRUE(ck.arrays.count(name)) << name;
      EXPECT_NE(ck.arrays.at(name).at(0), 0.0f) << name;  // initialized
    }
  // load_model rebuilds the same quantized model, learned steps included.
  LoadedModel loaded = load_model(c.out_dir + "/checkpoint.bin", c.batch_size);
  EXPECT_TRUE(loaded.quant.same_quantization(c.quant));
  const auto a = learned_values(trainer.model()), b = learned_values(*loaded.model);
  EXPECT_EQ(count_differing(a, b), 0u);
  EXPECT_EQ(count_differing(trainer.model().params(), loaded.model->params()), 0u);
}

TEST_F(QuantTrainingTest, ResumeUnderADifferentQuantizationIsRefusedUnlessAllowed) {
  TrainConfig c = quant_config(dir_, "w=lsq:4,a=lsq:4");
  c.steps = 4;
  c.out_dir = dir_ / "first";
  {
    Trainer first(c);
    first.run(2);
    first.save_checkpoint(dir_ / "lsq.bin");
  }
  TrainConfig r = quant_config(dir_, "w=quest:4,a=quest:4");
  r.steps = 4;
  r.resume = dir_ / "lsq.bin";
  r.out_dir = dir_ / "second";
  try {
    Trainer refused(r);
    FAIL() << "a checkpoint trained with LSQ resumed under QuEST without being asked to";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("lsq:4"), std::string::npos) << msg;
    EXPECT_NE(msg.find("hadamard-trust:4"), std::string::npos) << msg;
    EXPECT_NE(msg.find("allow-quant-change"), std::string::npos) << msg;
  }
  // Same numerics, other form: not a change.
  TrainConfig same = quant_config(dir_, "w=lsq:4,a=lsq:4,form=full");
  same.steps = 4;
  same.resume = r.resume;
  same.out_dir = dir_ / "same";
  EXPECT_NO_THROW(Trainer{same});
  // Full precision is a change too.
  TrainConfig fp = quant_config(dir_, "w=none,a=none");
  fp.steps = 4;
  fp.resume = r.resume;
  fp.out_dir = dir_ / "fp";
  EXPECT_THROW(Trainer{fp}, Error);

  r.allow_quant_change = true;
  Trainer switched(r);
  EXPECT_EQ(switched.step(), 2);
  // The weights carry over.
  const Checkpoint ck = load_checkpoint(r.resume);
  EXPECT_EQ(count_differing(switched.model().params(), ck.arrays.at("params")), 0u);
  const TrainSummary s = switched.run();
  EXPECT_EQ(s.steps, 4);
  EXPECT_TRUE(std::isfinite(s.eval.loss));
}

TEST_F(QuantTrainingTest, SwitchingToLsqInitializesItsStepsFromTheLoadedWeights) {
  TrainConfig c = quant_config(dir_, "w=none,a=none");
  c.steps = 30;
  c.out_dir = dir_ / "fp";
  Trainer(c).run();
  const std::string ck_path = c.out_dir + "/checkpoint.bin";
  const Checkpoint ck = load_checkpoint(ck_path);

  TrainConfig r = quant_config(dir_, "w=lsq:4,a=lsq:4");
  r.steps = 30;
  r.resume = ck_path;
  r.allow_quant_change = true;
  r.out_dir = dir_ / "lsq";
  Trainer switched(r);
  // Each weight step is LSQ's init from the trained weight: 2 * mean|W| / sqrt(qmax), qmax = 7.
  const auto& params = ck.arrays.at("params");
  for (auto& [name, op] : switched.model().named_linears()) {
    const ParamTensor& t = switched.model().tensor(name);
    double mean_abs = 0;
    for (int64_t i = 0; i < t.numel(); ++i) mean_abs += std::fabs(params[t.offset + i]);
    mean_abs /= double(t.numel());
    const float step = op->learned_params().at(0).value[0];
    ASSERT_EQ(op->learned_params().at(0).name, "weight.lsq_step");
    EXPECT_NEAR(step, 2 * mean_abs / std::sqrt(7.0), 1e-5 * step) << name;
  }
}

TEST_F(QuantTrainingTest, LsqRunResumesBitForBit) {
  TrainConfig c = quant_config(dir_, "w=lsq:3,a=lsq:4");
  c.steps = 8;
  c.grad_accum = 2;
  c.out_dir = dir_ / "straight";
  Trainer straight(c);
  straight.run();
  const std::vector<float> expected(straight.model().params().begin(), straight.model().params().end());
  const std::vector<float> expected_learned = learned_values(straight.model());
  ASSERT_EQ(expected_learned.size(), 10u);

  c.out_dir = dir_ / "first";
  Trainer first(c);
  first.run(4);
  const std::string ck = dir_ / "half.bin";
  first.save_checkpoint(ck);
  // The learned steps move during training (else restoring them would prove nothing).
  EXPECT_GT(count_differing(learned_values(first.model()), expected_learned), 0u);

  c.out_dir = dir_ / "second";
  c.resume = ck;
  Trainer second(c);
  EXPECT_EQ(second.step(), 4);
  EXPECT_EQ(count_differing(learned_values(second.model()), learned_values(first.model())), 0u);
  second.run();
  EXPECT_EQ(count_differing(second.model().params(), expected), 0u);
  EXPECT_EQ(count_differing(learned_values(second.model()), expected_learned), 0u);
}

// ------------------------------------------------------------------------------------------------
// Mask statistics in the log.

TEST_F(QuantTrainingTest, MaskStatisticsAreLoggedAtEachEvaluation) {
  TrainConfig c = quant_config(dir_, "w=quest:4,a=quest:4");
  c.steps = 6;
  c.eval_every = 2;
  Trainer trainer(c);
  trainer.run();
  const std::string log = c.out_dir + "/log.jsonl";
  const auto masks = read_log(log, "masks");
  const auto evals = read_log(log, "eval");
  ASSERT_EQ(masks.size(), 3u);
  ASSERT_EQ(evals.size(), 3u);
  for (size_t i = 0; i < masks.size(); ++i) {
    const auto& m = masks[i];
    SCOPED_TRACE(m.dump());
    EXPECT_EQ(m.at("step").get<int64_t>(), int64_t(2 * (i + 1)));
    EXPECT_EQ(evals[i].at("step").get<int64_t>(), int64_t(2 * (i + 1)));
    ASSERT_EQ(m.at("layers").size(), 5u);
    for (const char* layer : {"wqkv", "wo", "w1", "w2", "w3"}) {
      const auto& rec = m.at("layers").at(std::string("layers.0.") + layer);
      const double w = rec.at("w_masked"), x = rec.at("x_masked");
      // W4 trust masks (spec section 3's table: about 1.5% on Gaussian data); inputs after RMSNorm
      // and SwiGLU are far from Gaussian, so only a loose band for them.
      EXPECT_GT(w, 0.001);
      EXPECT_LT(w, 0.1);
      EXPECT_GT(x, 0.0);
      EXPECT_LT(x, 0.5);
      EXPECT_EQ(rec.contains("w_persistence"), i > 0);
      if (i > 0) {
        const double p = rec.at("w_persistence");
        EXPECT_GE(p, 0.0);
        EXPECT_LE(p, 1.0);
      }
    }
    EXPECT_EQ(m.contains("mean_w_persistence"), i > 0);
    const double mean_w = m.at("mean_w_masked");
    EXPECT_GT(mean_w, 0.001);
    EXPECT_LT(mean_w, 0.1);
  }
}

TEST_F(QuantTrainingTest, MaskStatisticsOnlyWhereSomethingMasks) {
  // Full precision and STE mask nothing: no record. Weight-only QuEST: inputs report 0.
  for (const std::string q : {"w=none,a=none", "w=ste:4,a=ste:4"}) {
    TrainConfig c = quant_config(dir_, q);
    c.steps = 2;
    c.eval_every = 1;
    c.out_dir = dir_ / ("m" + std::to_string(q.size()));
    Trainer(c).run();
    EXPECT_TRUE(read_log(c.out_dir + "/log.jsonl", "masks").empty()) << q;
    EXPECT_EQ(read_log(c.out_dir + "/log.jsonl", "eval").size(), 2u) << q;
  }
  TrainConfig c = quant_config(dir_, "w=quest:4");
  c.steps = 2;
  c.out_dir = dir_ / "weight-only";
  Trainer(c).run();
  const auto masks = read_log(c.out_dir + "/log.jsonl", "masks");
  ASSERT_EQ(masks.size(), 1u);
  EXPECT_EQ(masks[0].at("mean_x_masked").get<double>(), 0.0);
  EXPECT_GT(masks[0].at("mean_w_masked").get<double>(), 0.0);
}

// ------------------------------------------------------------------------------------------------
// Gradient alignment.

class AlignmentTest : public QuantTrainingTest {
 protected:
  // A full-precision model trained a little: 40 steps.
  void SetUp() override {
    QuantTrainingTest::SetUp();
    TrainConfig c = quant_config(dir_, "w=none,a=none");
    c.steps = 40;
    c.batch_size = 8;
    c.out_dir = dir_ / "fp";
    Trainer trainer(c);
    trainer.run();
    config_ = c.model;
    params_.assign(trainer.model().params().begin(), trainer.model().params().end());
  }
  std::vector<LayerAlignment> align(const std::string& quant) {
    const TokenDataset val = TokenDataset::open(dir_.path(), "val");
    return gradient_alignment(config_, params_, QuantConfig::parse(quant), val, 4);
  }
  static double mean(const std::vector<LayerAlignment>& rows) {
    double s = 0;
    for (const auto& r : rows) s += r.cosine;
    return s / double(rows.size());
  }
  ModelConfig config_;
  std::vector<float> params_;
};

TEST_F(AlignmentTest, QuestW8A8GradientsAlignWithFullPrecision) {
  const auto rows = align("w=quest:8,a=quest:8");
  ASSERT_EQ(rows.size(), 5u);  // the five linear layers of the one block, in layout order
  EXPECT_EQ(rows[0].layer, "layers.0.wqkv");
  EXPECT_EQ(rows[4].layer, "layers.0.w3");
  for (const auto& r : rows) EXPECT_GT(r.cosine, 0.99) << r.layer;
}

TEST_F(AlignmentTest, FullPrecisionAgainstItselfIsExactlyAligned) {
  // The library computes it (cosine 1); `quest align` refuses it as nothing to compare.
  for (const auto& r : align("w=none,a=none")) EXPECT_NEAR(r.cosine, 1.0, 1e-12) << r.layer;
}

TEST_F(AlignmentTest, AlignmentFallsWithTheWidth) {
  const double w8 = mean(align("w=quest:8,a=quest:8")), w4 = mean(align("w=quest:4,a=quest:4")),
               w1 = mean(align("w=quest:1,a=quest:1"));
  EXPECT_GT(w8, w4);
  EXPECT_GT(w4, w1);
  EXPECT_GT(w4, 0.9);
}

TEST_F(AlignmentTest, QuestAlignsBetterThanSteAtFourBits) {
  // The paper's figure 2 at W4A4. Over seeds 1-12 (40 steps, this model) QuEST's mean cosine was
  // 0.96-0.98 and STE's 0.30-0.97, QuEST ahead at every seed; seed 7 gives about 0.965 vs 0.54.
  // At W2A2 and W1A1 the order flipped between seeds on a model this small, so it is not asserted.
  const double quest = mean(align("w=quest:4,a=quest:4")), ste = mean(align("w=ste:4,a=ste:4"));
  EXPECT_GT(quest, ste + 0.05) << "QuEST " << quest << ", STE " << ste;
}

TEST_F(AlignmentTest, ImpossibleRequestsAreClearErrors) {
  const TokenDataset val = TokenDataset::open(dir_.path(), "val");
  // More windows than the data holds.
  EXPECT_THROW(gradient_alignment(config_, params_, QuantConfig::parse("w=quest:4,a=quest:4"), val, 1 << 20),
               Error);
  // Parameters of another model.
  std::vector<float> wrong(params_.begin(), params_.end() - 1);
  EXPECT_THROW(gradient_alignment(config_, wrong, QuantConfig::parse("w=quest:4,a=quest:4"), val, 2), Error);
}

TEST_F(QuantTrainingTest, AlignmentUsesTheCheckpointsLearnedParams) {
  TrainConfig c = quant_config(dir_, "w=lsq:4,a=lsq:4");
  c.steps = 8;
  Trainer trainer(c);
  trainer.run();
  const Checkpoint ck = load_checkpoint(c.out_dir + "/checkpoint.bin");
  const TokenDataset val = TokenDataset::open(dir_.path(), "val");
  const auto& params = ck.arrays.at("params");
  const auto trained = gradient_alignment(c.model, params, c.quant, val, 2, &ck);
  const auto fresh = gradient_alignment(c.model, params, c.quant, val, 2);
  ASSERT_EQ(trained.size(), fresh.size());
  int differing = 0;
  for (size_t i = 0; i < trained.size(); ++i) differing += trained[i].cosine != fresh[i].cosine;
  EXPECT_GT(differing, 0) << "the trained LSQ steps made no difference: were they used?";
  // Learned parameters of another quantization are refused.
  EXPECT_THROW(gradient_alignment(c.model, params, QuantConfig::parse("w=lsq:3,a=lsq:4"), val, 2, &ck),
               Error);
}

}  // namespace
}  // namespace quest
