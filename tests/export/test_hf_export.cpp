// The Hugging Face export: the q/k row permutation turns our adjacent-pair RoPE into
// transformers' rotate-half RoPE; config.json and tensor names and shapes; the reference logits.
// (transformers itself runs on the device machine: scripts/check_hf_export.py.)
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "core/file_io.h"
#include "core/rng.h"
#include "data/temp_dir.h"
#include "export/export_test_util.h"
#include "export/hf_export.h"
#include "export/safetensors.h"
#include "ops/cpu_ops.h"

namespace quest {
namespace {

// transformers' rotate-half RoPE of one head vector at position pos (its formula, written here).
std::vector<float> hf_rope(const std::vector<float>& x, int64_t pos, double theta) {
  const int64_t hd = int64_t(x.size()), half = hd / 2;
  std::vector<float> out(x.size());
  for (int64_t j = 0; j < hd; ++j) {
    const int64_t i = j % half;
    const double angle = double(pos) / std::pow(theta, double(2 * i) / double(hd));
    const double rot = j < half ? -double(x[j + half]) : double(x[j - half]);
    out[j] = float(double(x[j]) * std::cos(angle) + rot * std::sin(angle));
  }
  return out;
}

TEST(HfExport, PermutedRowsMakeRotateHalfRopeEqualOurs) {
  const int64_t hd = 16, nh = 1, T = 5;
  Rng rng(3);
  // qkv rows of one token per position: q | k | v, one head.
  std::vector<float> qkv(static_cast<size_t>(T * 3 * hd));
  for (auto& v : qkv) v = float(rng.normal());
  std::vector<float> ours = qkv;
  cpu::rope_forward(ours.data(), 1, T, nh, hd, 10000.0f);
  for (int64_t t = 0; t < T; ++t)
    for (int part = 0; part < 2; ++part) {
      const float* src = qkv.data() + t * 3 * hd + part * hd;
      std::vector<float> permuted(static_cast<size_t>(hd));
      for (int64_t j = 0; j < hd; ++j) permuted[j] = src[hf_rope_row(j, hd)];
      const auto hf = hf_rope(permuted, t, 10000.0);
      for (int64_t j = 0; j < hd; ++j)
        EXPECT_NEAR(hf[j], ours[t * 3 * hd + part * hd + hf_rope_row(j, hd)], 1e-5) << t << " " << j;
    }
}

TEST(HfExport, WritesConfigTensorsAndReferenceLogits) {
  test::TempDir dir;
  LoadedModel m = test::make_test_model("w=quest:4,a=quest:4");
  HfExportOptions o;
  o.floats = FloatFormat::F32;
  o.reference_tokens = 6;
  export_hf(m, dir.path(), o);
  const auto cfg = nlohmann::json::parse(read_text_file(dir / "config.json"));
  const auto& c = m.model->config();
  EXPECT_EQ(cfg["model_type"], "llama");
  EXPECT_EQ(cfg["hidden_size"], c.d_model);
  EXPECT_EQ(cfg["intermediate_size"], c.hidden_dim());
  EXPECT_EQ(cfg["num_attention_heads"], c.n_head());
  EXPECT_EQ(cfg["vocab_size"], c.padded_vocab());
  EXPECT_EQ(cfg["tie_word_embeddings"], false);
  EXPECT_FLOAT_EQ(cfg["rms_norm_eps"].get<float>(), 1e-5f);

  const auto f = SafetensorsFile::open(dir / "model.safetensors");
  EXPECT_EQ(f.metadata().at("format"), "pt");
  EXPECT_EQ(f.tensors().size(), size_t(3 + 9 * c.n_layer));
  const TensorInfo* k = f.find("model.layers.1.self_attn.k_proj.weight");
  ASSERT_NE(k, nullptr);
  EXPECT_EQ(k->shape, (std::vector<int64_t>{c.d_model, c.d_model}));
  EXPECT_EQ(f.find("model.layers.0.mlp.down_proj.weight")->shape, (std::vector<int64_t>{c.d_model, c.hidden_dim()}));
  // k_proj row j of head 1 is quest's wqkv row d + 64 + hf_rope_row(j), of the effective weight.
  const auto eff = effective_parameters(*m.model);
  const float* wqkv = eff.data() + m.model->tensor("layers.1.wqkv").offset;
  float row[128];
  std::memcpy(row, f.data(*k).data() + (64 + 3) * c.d_model * 4, sizeof row);
  EXPECT_EQ(0, std::memcmp(row, wqkv + (c.d_model + 64 + hf_rope_row(3, 64)) * c.d_model, sizeof row));
  // v rows are not permuted.
  std::memcpy(row, f.data(*f.find("model.layers.1.self_attn.v_proj.weight")).data() + 5 * c.d_model * 4, sizeof row);
  EXPECT_EQ(0, std::memcmp(row, wqkv + (2 * c.d_model + 5) * c.d_model, sizeof row));

  const auto ref = SafetensorsFile::open(dir / "quest_reference.safetensors");
  EXPECT_EQ(ref.find("input_ids")->shape, (std::vector<int64_t>{1, 6}));
  EXPECT_EQ(ref.find("logits")->shape, (std::vector<int64_t>{6, c.vocab_size}));
  // The quantized forward's logits differ from the full-precision-input ones, but not by much.
  const auto* a = reinterpret_cast<const float*>(ref.data(*ref.find("logits")).data());
  const auto* b = reinterpret_cast<const float*>(ref.data(*ref.find("logits_quantized")).data());
  double diff = 0;
  for (int64_t i = 0; i < 6 * c.vocab_size; ++i) diff = std::max(diff, double(std::fabs(a[i] - b[i])));
  EXPECT_GT(diff, 0.0);
  EXPECT_LT(diff, 1.0);
}

TEST(HfExport, UnquantizedModelReferenceMatchesItsOwnForward) {
  test::TempDir dir;
  LoadedModel m = test::make_test_model("");
  HfExportOptions o;
  o.floats = FloatFormat::F32;
  o.reference_tokens = 4;
  export_hf(m, dir.path(), o);
  const auto ref = SafetensorsFile::open(dir / "quest_reference.safetensors");
  EXPECT_TRUE(std::equal(ref.data(*ref.find("logits")).begin(), ref.data(*ref.find("logits")).end(),
                         ref.data(*ref.find("logits_quantized")).begin()));
}

}  // namespace
}  // namespace quest
