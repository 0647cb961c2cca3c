// Loading a packed export back into a Model (packed_export.h).
#include <cstring>
#include <fmt/ranges.h>

#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "core/file_io.h"
#include "export/packed_export.h"
#include "export/safetensors.h"
#include "export/weight_codes.h"
#include "quant/hadamard.h"

namespace quest {

namespace {

const std::string& meta(const SafetensorsFile& f, const std::string& key, const std::string& what) {
  const auto it = f.metadata().find(key);
  QUEST_CHECK(it != f.metadata().end(), "{}: the header's metadata has no '{}'", what, key);
  return it->second;
}

template <class T>
T meta_json(const SafetensorsFile& f, const std::string& key, const std::string& what) {
  try {
    return nlohmann::json::parse(meta(f, key, what)).get<T>();
  } catch (const nlohmann::json::exception& e) {
    fail("{}: the header's '{}' is not a valid configuration: {}", what, key, e.what());
  } catch (const Error& e) {
    fail("{}: the header's '{}' is not a valid configuration: {}", what, key, e.what());
  }
}

const TensorInfo& expect(const SafetensorsFile& f, const std::string& name, Dtype dtype,
                         const std::vector<int64_t>& shape, const std::string& what,
                         std::set<std::string>& used) {
  const TensorInfo* t = f.find(name);
  QUEST_CHECK(t != nullptr, "{}: tensor '{}' is missing", what, name);
  QUEST_CHECK(t->dtype == dtype, "{}: tensor '{}' is {}, expected {}", what, name, dtype_name(t->dtype),
              dtype_name(dtype));
  QUEST_CHECK(t->shape == shape, "{}: tensor '{}' has shape [{}], the header's model needs [{}]", what,
              name, fmt::join(t->shape, ", "), fmt::join(shape, ", "));
  used.insert(name);
  return *t;
}

}  // namespace

PackedWeight read_packed_weight(const SafetensorsFile& f, const std::string& name, const QuantSpec& spec,
                                int64_t rows, int64_t cols, const std::string& path) {
  const std::string what = fmt::format("export '{}'", path);
  const auto kind = code_kind(spec);
  QUEST_CHECK(kind.has_value(), "{}: layer '{}' has no weight quantizer, hence no codes", what, name);
  std::set<std::string> used;
  PackedWeight p;
  p.rows = rows, p.cols = cols, p.bits = spec.bits;
  const auto& codes = expect(f, name + ".codes", Dtype::U8, {rows, code_row_bytes(*kind, spec.bits, cols)}, what, used);
  const auto& scales = expect(f, name + ".scale", Dtype::F32, {rows}, what, used);
  p.codes.assign(f.data(codes).begin(), f.data(codes).end());
  p.scales.resize(static_cast<size_t>(rows));
  std::memcpy(p.scales.data(), f.data(scales).data(), f.data(scales).size());
  if (*kind == CodeKind::Sparse48) {
    const auto& pairs = expect(f, name + ".pairs", Dtype::U8, {rows, pair_row_bytes(cols)}, what, used);
    p.pairs.assign(f.data(pairs).begin(), f.data(pairs).end());
  }
  return p;
}

LoadedModel load_packed(const std::string& path, int64_t batch) {
  const SafetensorsFile f = SafetensorsFile::open(path);
  const std::string what = fmt::format("export '{}'", path);
  const auto fmt_it = f.metadata().find("format");
  QUEST_CHECK(fmt_it != f.metadata().end() && fmt_it->second == kPackedFormat,
              "'{}' is a safetensors file but not a quest packed export (its metadata names no "
              "format \"{}\")", path, kPackedFormat);
  QUEST_CHECK(meta(f, "format_version", what) == std::to_string(kPackedFormatVersion),
              "{}: format version {}, this quest reads version {}", what, meta(f, "format_version", what),
              kPackedFormatVersion);
  const std::string crc = fmt::format("{:08x}", crc32(f.buffer().data(), f.buffer().size()));
  QUEST_CHECK(crc == meta(f, "data_crc32", what),
              "{} is corrupt: the tensor data's CRC-32 is {}, the header records {}", what, crc,
              meta(f, "data_crc32", what));

  LoadedModel out;
  const auto cfg = meta_json<ModelConfig>(f, "model", what);
  out.quant = meta_json<QuantConfig>(f, "quant", what);
  out.tokenizer = meta(f, "tokenizer", what);
  try {
    out.step = std::stoll(meta(f, "step", what));
  } catch (const std::exception&) {
    fail("{}: the header's step '{}' is not a number", what, meta(f, "step", what));
  }
  try {
    out.model = std::make_unique<Model>(cfg, batch, quantized_linear_factory(out.quant));
  } catch (const Error& e) {
    fail("{}: the header's model and quantization do not fit: {}", what, e.what());
  }
  Model& model = *out.model;
  std::set<std::string> used;
  auto read_float = [&](const std::string& name, int64_t rows, int64_t cols, bool vector, float* dst) {
    read_float_tensor(f, name, rows, cols, vector, dst, what);
    used.insert(name);
    if (f.find(name)->dtype == Dtype::I8) used.insert(name + ".scale");
  };

  // Installed after prepare_weights(), which would otherwise re-quantize them.
  std::vector<std::pair<LinearOp*, std::vector<float>>> product;
  auto ops = model.named_linears();
  size_t next_op = 0;
  for (const ParamTensor& t : model.layout()) {
    float* v = model.param(t);
    if (t.kind != ParamKind::Linear) {
      read_float(t.name, t.rows, t.cols, t.kind == ParamKind::Norm, v);
      continue;
    }
    LinearOp& op = *ops[next_op++].op;
    for (auto& lp : op.learned_params()) {
      const auto& ti = expect(f, t.name + "." + lp.name, Dtype::F32, {int64_t(lp.value.size())}, what, used);
      std::memcpy(lp.value.data(), f.data(ti).data(), lp.value.size_bytes());
    }
    const QuantSpec& spec = op.quant_config().weight;
    const auto kind = code_kind(spec);
    if (!kind) {
      read_float(t.name, t.rows, t.cols, false, v);
      continue;
    }
    const PackedWeight p = read_packed_weight(f, t.name, spec, t.rows, t.cols, path);
    for (const char* part : {".codes", ".scale", ".pairs"}) used.insert(t.name + part);
    std::vector<float> xq(static_cast<size_t>(t.numel()));
    decode_weight(spec, p, xq.data());
    // The master weight: the dequantized weight in the original domain (H is its own inverse).
    std::memcpy(v, xq.data(), sizeof(float) * xq.size());
    if (spec.hadamard) hadamard_transform_rows(v, t.rows, t.cols);
    // The product weight: in the Hadamard domain in the half form, else in the original domain.
    if (spec.hadamard && !op.half_form()) std::memcpy(xq.data(), v, sizeof(float) * xq.size());
    product.emplace_back(&op, std::move(xq));
  }
  for (const auto& t : f.tensors())
    QUEST_CHECK(used.count(t.name), "{}: unexpected tensor '{}' (the header's model has no such "
                "parameter)", what, t.name);
  model.prepare_weights();
  for (auto& [op, w] : product) op->set_product_weight(w.data());
  return out;
}

}  // namespace quest
