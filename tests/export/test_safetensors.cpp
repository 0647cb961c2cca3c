// Our safetensors reader and writer: the documented byte layout, validation of bad files.
#include <gtest/gtest.h>

#include <cstring>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "data/temp_dir.h"
#include "export/dtype.h"
#include "export/safetensors.h"

namespace quest {
namespace {

std::vector<uint8_t> raw_file(const std::string& header, const std::vector<uint8_t>& data) {
  std::vector<uint8_t> out(8 + header.size());
  const uint64_t n = header.size();
  std::memcpy(out.data(), &n, 8);
  std::memcpy(out.data() + 8, header.data(), header.size());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

TEST(Safetensors, WritesTheDocumentedLayout) {
  SafetensorsWriter w;
  const uint8_t bytes[3] = {1, 2, 3};
  w.add("codes", Dtype::U8, {3}, bytes, 3);
  const float f[2] = {1.5f, -2.0f};
  w.add_f32("scale", {2}, f);
  w.set_metadata("format", "test");
  const auto out = w.serialize();
  uint64_t n;
  std::memcpy(&n, out.data(), 8);
  EXPECT_EQ((8 + n) % 8, 0u) << "the data starts 8-byte aligned";
  const auto header = nlohmann::json::parse(std::string(out.begin() + 8, out.begin() + 8 + int64_t(n)));
  EXPECT_EQ(header["__metadata__"]["format"], "test");
  // The F32 tensor comes first (largest elements first keeps every offset aligned).
  EXPECT_EQ(header["scale"]["data_offsets"], nlohmann::json({0, 8}));
  EXPECT_EQ(header["codes"]["data_offsets"], nlohmann::json({8, 11}));
  EXPECT_EQ(header["codes"]["dtype"], "U8");
  EXPECT_EQ(header["scale"]["shape"], nlohmann::json({2}));
  EXPECT_EQ(out.size(), 8 + n + 11);

  const auto file = SafetensorsFile::parse(out, "mem");
  ASSERT_NE(file.find("scale"), nullptr);
  float back[2];
  std::memcpy(back, file.data(*file.find("scale")).data(), 8);
  EXPECT_EQ(back[0], 1.5f);
  EXPECT_EQ(back[1], -2.0f);
  EXPECT_EQ(file.data(*file.find("codes"))[2], 3);
  EXPECT_EQ(file.metadata().at("format"), "test");
}

TEST(Safetensors, ReadsAHandWrittenFile) {
  // As the reference library writes it: header padded with spaces, no metadata.
  std::string header = R"({"a":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]},"b":{"dtype":"I64","shape":[],"data_offsets":[4,12]}})";
  header.append((8 - header.size() % 8) % 8, ' ');
  std::vector<uint8_t> data(12, 0);
  const uint16_t one = float_to_bf16(1.0f), half = float_to_bf16(-0.5f);
  std::memcpy(data.data(), &one, 2);
  std::memcpy(data.data() + 2, &half, 2);
  const int64_t seven = 7;
  std::memcpy(data.data() + 4, &seven, 8);
  const auto f = SafetensorsFile::parse(raw_file(header, data), "mem");
  ASSERT_EQ(f.tensors().size(), 2u);
  const TensorInfo& a = *f.find("a");
  EXPECT_EQ(element_as_double(a.dtype, f.data(a).data(), 1), -0.5);
  const TensorInfo& b = *f.find("b");
  EXPECT_TRUE(b.shape.empty());
  EXPECT_EQ(element_as_double(b.dtype, f.data(b).data(), 0), 7.0);
}

TEST(Safetensors, RefusesBadFiles) {
  auto refuse = [](const std::string& header, size_t data_bytes, const std::string& words) {
    try {
      SafetensorsFile::parse(raw_file(header, std::vector<uint8_t>(data_bytes)), "f");
      ADD_FAILURE() << "accepted: " << header;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
    }
  };
  const std::string ok = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  refuse(ok, 4, "truncated");
  refuse(ok, 12, "trailing");
  refuse(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8, "needs 12 bytes");
  refuse(R"({"a":{"dtype":"Q7","shape":[2],"data_offsets":[0,8]}})", 8, "unsupported dtype");
  refuse(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12, "hole");
  refuse(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}})", 6, "overlap");
  refuse(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8, "bad shape");
  refuse(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})", 8, "not valid JSON");
  refuse(R"({"__metadata__":{"k":1},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8, "not a string");
  refuse("[1, 2]", 0, "not a JSON object");
  EXPECT_THROW(SafetensorsFile::parse({1, 2, 3}, "short"), Error);
  std::vector<uint8_t> huge(16, 0);
  huge[7] = 0x7F;  // header length 2^62
  EXPECT_THROW(SafetensorsFile::parse(huge, "huge"), Error);
}

TEST(Safetensors, WriterChecksSizesAndNames) {
  SafetensorsWriter w;
  const float f[2] = {};
  EXPECT_THROW(w.add("x", Dtype::F32, {3}, f, 8), Error);
  w.add("x", Dtype::F32, {2}, f, 8);
  EXPECT_THROW(w.add("x", Dtype::F32, {2}, f, 8), Error);
  EXPECT_THROW(w.add("__metadata__", Dtype::F32, {2}, f, 8), Error);
}

TEST(Safetensors, FileRoundTripIsAtomic) {
  test::TempDir dir;
  SafetensorsWriter w;
  const float f[3] = {1, 2, 3};
  w.add_f32("v", {3}, f);
  w.write(dir / "x.safetensors");
  const auto back = SafetensorsFile::open(dir / "x.safetensors");
  EXPECT_EQ(back.tensors().size(), 1u);
  EXPECT_THROW(SafetensorsFile::open(dir / "missing.safetensors"), Error);
}

TEST(Dtype, Bf16RoundsToNearestEven) {
  EXPECT_EQ(float_to_bf16(1.0f), 0x3F80);
  // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1.0).
  EXPECT_EQ(round_to_bf16(1.0f + 0x1p-8f), 1.0f);
  EXPECT_EQ(round_to_bf16(1.0f + 3 * 0x1p-8f), 1.0f + 0x1p-6f);
  EXPECT_EQ(round_to_bf16(1.0f + 0x1p-8f + 0x1p-20f), 1.0f + 0x1p-7f);
  EXPECT_TRUE(std::isnan(round_to_bf16(std::nanf(""))));
  EXPECT_EQ(f16_to_float(0x3C00), 1.0f);
  EXPECT_EQ(f16_to_float(0xC000), -2.0f);
  EXPECT_EQ(f16_to_float(0x0001), 0x1p-24f);
  EXPECT_TRUE(std::isinf(f16_to_float(0x7C00)));
}

}  // namespace
}  // namespace quest
