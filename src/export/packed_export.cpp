#include "export/packed_export.h"

#include <bit>
#include <cstring>
#include <nlohmann/json.hpp>
#include <optional>

#include "core/error.h"
#include "core/file_io.h"
#include "export/safetensors.h"
#include "export/weight_codes.h"
#include "quant/factory.h"
#include "quant/hadamard.h"

namespace quest {

namespace {

// The weight quantizer's learned value (LSQ step, PACT alpha), or 0.
float learned_weight_value(LinearOp& op) {
  for (auto& lp : op.learned_params())
    if (lp.name.starts_with("weight.")) return lp.value[0];
  return 0.0f;
}

// The quantizer's output for the master weight w, in the quantizer's own domain, computed by a
// fresh quantizer of the same spec (with the layer's learned value).
std::vector<float> quantized_in_domain(const QuantSpec& spec, const float* w, int64_t rows,
                                       int64_t cols, float learned, std::vector<float>& domain) {
  domain.assign(w, w + rows * cols);
  auto q = make_quantizer(spec, QuantRole::Weight, cols);
  TensorQuantizer* inner = spec.hadamard ? q->hadamard_inner() : q.get();
  if (spec.hadamard) hadamard_transform_rows(domain.data(), rows, cols);
  if (!inner->params().empty()) inner->params()[0] = learned;
  inner->reserve(rows, cols);
  std::vector<float> xq(domain.size());
  inner->forward(domain.data(), xq.data(), rows, cols);
  return xq;
}

}  // namespace

PackedExportSummary export_packed(LoadedModel& m, const std::string& path,
                                  const PackedExportOptions& options) {
  Model& model = *m.model;
  const ModelConfig& cfg = model.config();
  SafetensorsWriter w;
  PackedExportSummary sum;
  std::optional<SafetensorsFile> source;
  if (!options.codes_from.empty()) source = SafetensorsFile::open(options.codes_from);
  auto ops = model.named_linears();
  size_t next_op = 0;
  for (const ParamTensor& t : model.layout()) {
    const float* v = model.param(t);
    if (t.kind != ParamKind::Linear) {
      add_float_tensor(w, t.name, v, t.rows, t.cols, t.kind == ParamKind::Norm, options.floats);
      continue;
    }
    QUEST_CHECK(next_op < ops.size() && ops[next_op].name == t.name, "export: layer order mismatch at '{}'", t.name);
    LinearOp& op = *ops[next_op++].op;
    const QuantSpec& spec = op.quant_config().weight;
    for (auto& lp : op.learned_params())
      w.add_f32(t.name + "." + lp.name, {int64_t(lp.value.size())}, lp.value);
    if (!code_kind(spec)) {
      add_float_tensor(w, t.name, v, t.rows, t.cols, false, options.floats);
      ++sum.float_layers;
      continue;
    }
    const std::string what = fmt::format("export of '{}' ({})", t.name, spec.to_string());
    PackedWeight p;
    if (source) {
      p = read_packed_weight(*source, t.name, spec, t.rows, t.cols, options.codes_from);
    } else {
      const float learned = learned_weight_value(op);
      std::vector<float> domain;
      const std::vector<float> xq = quantized_in_domain(spec, v, t.rows, t.cols, learned, domain);
      p = encode_weight(spec, xq.data(), weight_scales(spec, domain.data(), t.rows, t.cols, learned),
                        t.rows, t.cols, what);
    }
    // The codes must give back exactly the weight this layer's forward multiplies by.
    std::vector<float> back(static_cast<size_t>(t.numel()));
    decode_weight(spec, p, back.data());
    if (spec.hadamard && !op.half_form()) hadamard_transform_rows(back.data(), t.rows, t.cols);
    QUEST_CHECK(std::memcmp(back.data(), op.product_weight(), sizeof(float) * back.size()) == 0,
                "{}: the codes do not reproduce the layer's quantized weight (a bug: please report)", what);
    w.add(t.name + ".codes", Dtype::U8, {t.rows, int64_t(p.codes.size()) / t.rows}, p.codes.data(), p.codes.size());
    w.add_f32(t.name + ".scale", {t.rows}, p.scales);
    if (!p.pairs.empty())
      w.add(t.name + ".pairs", Dtype::U8, {t.rows, int64_t(p.pairs.size()) / t.rows}, p.pairs.data(), p.pairs.size());
    sum.code_bytes += p.codes.size() + p.pairs.size() + 4 * p.scales.size();
    ++sum.packed_layers;
  }
  w.set_metadata("format", kPackedFormat);
  w.set_metadata("format_version", std::to_string(kPackedFormatVersion));
  w.set_metadata("model", nlohmann::json(cfg).dump());
  w.set_metadata("quant", nlohmann::json(m.quant).dump());
  w.set_metadata("tokenizer", m.tokenizer);
  w.set_metadata("step", std::to_string(m.step));
  w.set_metadata("float_format", std::string(to_string(options.floats)));
  w.set_metadata("codes", "per row, b-bit codes u packed LSB-first; odd code c = 2u - (2^b - 1), "
                          "value c * scale / 2 (fp4: sign<<3|e2m1 index); in the Hadamard domain "
                          "for hadamard-* weight quantizers; see quest docs/EXPORT.md");
  // The CRC-32 of the tensor data goes into the header, so the data is serialized twice.
  std::vector<uint8_t> bytes = w.serialize();
  uint64_t n;
  std::memcpy(&n, bytes.data(), 8);
  w.set_metadata("data_crc32", fmt::format("{:08x}", crc32(bytes.data() + 8 + n, bytes.size() - 8 - n)));
  bytes = w.serialize();
  AtomicFile file(path);
  file.write(bytes.data(), bytes.size());
  file.commit();
  std::memcpy(&n, bytes.data(), 8);
  sum.file_bytes = bytes.size();
  sum.float_bytes = bytes.size() - 8 - n - sum.code_bytes;
  return sum;
}

}  // namespace quest
