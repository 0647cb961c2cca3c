// The packed export: export -> load gives the same forward, bit for bit, for every weight
// quantizer; the float formats round only the float tensors; bad files are refused clearly.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file_io.h"
#include "core/log.h"
#include "data/temp_dir.h"
#include "export/export_test_util.h"
#include "export/hf_export.h"
#include "export/model_file.h"
#include "export/packed_export.h"
#include "export/safetensors.h"

namespace quest {
namespace {

using test::make_test_model;

class PackedExport : public ::testing::TestWithParam<const char*> {};

// Every weight quantizer (and layouts of each form) round-trips with an identical forward.
TEST_P(PackedExport, LoadGivesTheSameForwardBitForBit) {
  test::TempDir dir;
  LoadedModel m = make_test_model(GetParam());
  const auto batch = test::random_tokens(m.model->config(), 2, 5);
  const auto expected = test::token_losses(*m.model, batch);  // also initializes LSQ/PACT inputs
  const std::string path = dir / "m.safetensors";
  const auto summary = export_packed(m, path, {FloatFormat::F32, ""});
  EXPECT_EQ(summary.file_bytes, std::filesystem::file_size(path));

  LoadedModel r = load_packed(path, 2);
  EXPECT_TRUE(r.quant.same_quantization(m.quant));
  EXPECT_EQ(r.quant.form, m.quant.form);
  EXPECT_EQ(r.tokenizer, "test-bytes");
  EXPECT_EQ(r.step, 42);
  const auto got = test::token_losses(*r.model, batch);
  ASSERT_EQ(got.size(), expected.size());
  EXPECT_EQ(std::memcmp(got.data(), expected.data(), sizeof(float) * got.size()), 0)
      << "first: " << got[0] << " vs " << expected[0];
  // Generation's path (the KV-cache decoder) reads the same product weights.
  std::vector<float> a(61), b(61);
  m.model->last_logits(batch.x.data(), 7, a.data());
  r.model->last_logits(batch.x.data(), 7, b.data());
  EXPECT_EQ(a, b);

  // Exporting the loaded export again (its codes copied) gives the same file, byte for byte.
  const std::string again = dir / "again.safetensors";
  export_packed(r, again, {FloatFormat::F32, path});
  EXPECT_EQ(read_file(again), read_file(path));
}

INSTANTIATE_TEST_SUITE_P(
    Quantizers, PackedExport,
    ::testing::Values("w=quest:4,a=quest:4", "w=quest:1,a=quest:1", "w=quest:2,a=quest:2",
                      "w=quest:3,a=quest:8", "w=quest:5", "w=quest:6,a=quest:6", "w=quest:7",
                      "w=quest:8,a=quest:8", "w=quest:4,a=quest:4,form=full", "w=ste:2,a=ste:2",
                      "w=clip:3:c=1.5", "w=hadamard-clip:4", "w=lsq:4,a=lsq:4", "w=pact:3,a=pact:3",
                      "w=fp4,a=fp4", "w=hadamard-fp4,a=hadamard-fp4", "w=hadamard-sparse48:4,a=quest:4",
                      "w=sparse48:2", "w=none,a=quest:4", "w=none,a=lsq:3", ""),
    [](const auto& info) {
      std::string n = info.param;
      if (n.empty()) n = "unquantized";
      for (auto& ch : n)
        if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
      return n;
    });

// The float formats round the float tensors only: the loaded model computes what the original
// does with those tensors rounded the same way.
TEST(PackedExportFloats, Bf16AndInt8RoundOnlyTheFloatTensors) {
  test::TempDir dir;
  for (FloatFormat f : {FloatFormat::Bf16, FloatFormat::Int8}) {
    LoadedModel m = make_test_model("w=quest:4,a=quest:4");
    const auto batch = test::random_tokens(m.model->config(), 2, 9);
    const std::string path = dir / "m.safetensors";
    export_packed(m, path, {f, ""});
    LoadedModel r = load_packed(path, 2);
    for (const auto& t : m.model->layout())
      if (t.kind != ParamKind::Linear)
        round_like_format(m.model->param(t), t.rows, t.cols, t.kind == ParamKind::Norm, f);
    EXPECT_EQ(test::token_losses(*r.model, batch), test::token_losses(*m.model, batch)) << to_string(f);
  }
}

TEST(PackedExportFloats, SizesShrinkWithTheBits) {
  test::TempDir dir;
  uint64_t prev = 0;
  for (int bits : {8, 4, 2, 1}) {
    LoadedModel m = make_test_model(fmt::format("w=quest:{},a=quest:{}", bits, bits));
    const auto s = export_packed(m, dir / "m.safetensors", {FloatFormat::Bf16, ""});
    const auto& c = m.model->config();
    const int64_t linear = c.n_layer * (4 * c.d_model * c.d_model + 3 * c.d_model * c.hidden_dim());
    const int64_t rows = c.n_layer * (4 * c.d_model + 2 * c.hidden_dim() + c.d_model);
    EXPECT_EQ(s.code_bytes, uint64_t(linear * bits / 8 + 4 * rows)) << bits;
    if (prev) EXPECT_LT(s.file_bytes, prev);
    prev = s.file_bytes;
  }
}

// ---- bad files ---------------------------------------------------------------------------------

class PackedExportErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    m_ = make_test_model("w=quest:4,a=quest:4");
    path_ = dir_ / "m.safetensors";
    export_packed(m_, path_, {FloatFormat::Bf16, ""});
  }
  // Rewrites the export through `edit` (tensors and metadata), keeping the CRC-32 valid unless the
  // data changes.
  std::string rewrite(const std::function<void(std::map<std::string, std::string>&,
                                                std::vector<TensorInfo>&)>& edit) {
    const SafetensorsFile f = SafetensorsFile::open(path_);
    auto meta = f.metadata();
    auto tensors = f.tensors();
    edit(meta, tensors);
    SafetensorsWriter w;
    for (const auto& t : tensors) w.add(t.name, t.dtype, t.shape, f.data(t).data(), f.data(t).size());
    for (const auto& [k, v] : meta) w.set_metadata(k, v);
    auto bytes = w.serialize();
    uint64_t n;
    std::memcpy(&n, bytes.data(), 8);
    if (meta.count("data_crc32")) {
      w.set_metadata("data_crc32", fmt::format("{:08x}", crc32(bytes.data() + 8 + n, bytes.size() - 8 - n)));
      bytes = w.serialize();
    }
    const std::string out = dir_ / "edited.safetensors";
    std::ofstream(out, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
    return out;
  }
  void expect_refused(const std::string& path, const std::string& words) {
    try {
      load_model_file(path);
      ADD_FAILURE() << "accepted " << path;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
    }
  }
  test::TempDir dir_;
  LoadedModel m_;
  std::string path_;
};

TEST_F(PackedExportErrors, Truncated) {
  auto bytes = read_file(path_);
  for (size_t keep : {bytes.size() - 1, bytes.size() / 2, size_t(100), size_t(5)}) {
    const std::string cut = dir_.write("cut.safetensors", std::string_view(bytes.data(), keep));
    expect_refused(cut, keep == 5 ? "not a quest checkpoint or packed export" : "truncated");
  }
}

TEST_F(PackedExportErrors, CorruptData) {
  auto bytes = read_file(path_);
  bytes[bytes.size() - 1000] ^= 0x10;  // one bit inside the tensor data
  expect_refused(dir_.write("bad.safetensors", std::string_view(bytes.data(), bytes.size())), "corrupt");
}

TEST_F(PackedExportErrors, CorruptHeader) {
  auto bytes = read_file(path_);
  *std::find(bytes.begin() + 8, bytes.end(), ':') = '#';
  expect_refused(dir_.write("bad.safetensors", std::string_view(bytes.data(), bytes.size())), "JSON");
}

TEST_F(PackedExportErrors, HeaderDisagreesWithTensors) {
  // A model config of another width: the tensors do not have its shapes.
  expect_refused(rewrite([](auto& meta, auto&) {
                   auto j = nlohmann::json::parse(meta["model"]);
                   j["hidden"] = 384;
                   meta["model"] = j.dump();
                 }),
                 "the header's model needs");
  // Another bit width: the codes are too short.
  expect_refused(rewrite([](auto& meta, auto&) {
                   auto j = nlohmann::json::parse(meta["quant"]);
                   j["weight"]["bits"] = 8;
                   meta["quant"] = j.dump();
                 }),
                 "layers.0.wqkv.codes");
  // A weight-only config where inputs were quantized too is not detectable from shapes; a missing
  // tensor and an extra one are.
  expect_refused(rewrite([](auto&, auto& tensors) {
                   std::erase_if(tensors, [](const TensorInfo& t) { return t.name == "layers.1.w3.scale"; });
                 }),
                 "'layers.1.w3.scale' is missing");
  expect_refused(rewrite([](auto&, auto& tensors) {
                   auto t = tensors.front();
                   t.name = "layers.9.extra";
                   tensors.push_back(t);
                 }),
                 "unexpected tensor 'layers.9.extra'");
  expect_refused(rewrite([](auto& meta, auto&) { meta["quant"] = "{\"weight\": 3}"; }), "'quant'");
  expect_refused(rewrite([](auto& meta, auto&) { meta.erase("tokenizer"); }), "'tokenizer'");
  expect_refused(rewrite([](auto& meta, auto&) { meta["format_version"] = "99"; }), "version");
}

TEST_F(PackedExportErrors, NotAPackedExport) {
  HfExportOptions o;
  export_hf(m_, dir_ / "hf", o);
  expect_refused(dir_ / "hf/model.safetensors", "not a quest packed export");
  expect_refused(dir_.write("garbage.bin", "garbage, not a model at all"), "not a quest checkpoint or packed export");
  expect_refused(dir_ / "nowhere.safetensors", "does not exist");
  expect_refused(dir_.path(), "directory");
}

}  // namespace
}  // namespace quest
