// `quest inspect FILE.safetensors`: the header and tensors of any safetensors file (each tensor's
// dtype, shape and element sum); for a packed export, each quantized layer's code kind, bits and
// the sum of its dequantized values (what an independent decoder must reproduce).
#include <fmt/ranges.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "core/error.h"
#include "export/packed_export.h"
#include "export/safetensors.h"
#include "export/weight_codes.h"

namespace quest::cli {

namespace {
struct InspectOptions {
  std::string file, json;
};

void run_inspect(const InspectOptions& o) {
  const SafetensorsFile f = SafetensorsFile::open(o.file);
  nlohmann::json out = {{"file_bytes", f.file_size()}, {"header_bytes", f.header_size()},
                        {"metadata", f.metadata()}, {"tensors", nlohmann::json::array()}};
  fmt::print("{}: {} bytes, header {} bytes, {} tensors\n", o.file, f.file_size(), f.header_size(),
             f.tensors().size());
  for (const auto& [k, v] : f.metadata())
    fmt::print("  metadata {}: {}\n", k, v.size() > 200 ? v.substr(0, 200) + "..." : v);
  for (const auto& t : f.tensors()) {
    double sum = 0.0;
    const auto bytes = f.data(t);
    for (int64_t i = 0; i < t.numel(); ++i) sum += element_as_double(t.dtype, bytes.data(), i);
    fmt::print("  {} {} [{}] {} bytes, sum {:.9g}\n", t.name, dtype_name(t.dtype), fmt::join(t.shape, ", "),
               t.end - t.begin, sum);
    out["tensors"].push_back({{"name", t.name}, {"dtype", dtype_name(t.dtype)}, {"shape", t.shape},
                              {"data_offsets", {t.begin, t.end}}, {"sum", sum}});
  }
  const auto format = f.metadata().find("format");
  if (format != f.metadata().end() && format->second == kPackedFormat) {
    LoadedModel m = load_packed(o.file, 1);  // validates the whole export (CRC-32 included)
    out["packed_layers"] = nlohmann::json::object();
    for (auto& [name, op] : m.model->named_linears()) {
      const QuantSpec& spec = op->quant_config().weight;
      const auto kind = code_kind(spec);
      if (!kind) continue;
      const ParamTensor& t = m.model->tensor(name);
      const PackedWeight p = read_packed_weight(f, name, spec, t.rows, t.cols, o.file);
      std::vector<float> xq(static_cast<size_t>(t.numel()));
      decode_weight(spec, p, xq.data());
      double sum = 0.0, abs = 0.0;
      for (float v : xq) sum += v, abs += std::fabs(v);
      out["packed_layers"][name] = {{"kind", code_kind_name(*kind)}, {"bits", spec.bits},
                                    {"hadamard", spec.hadamard}, {"dequant_sum", sum}, {"dequant_abs_sum", abs}};
      fmt::print("  layer {}: {} {}-bit codes{}, dequantized sum {:.9g}, |sum| {:.9g}\n", name,
                 code_kind_name(*kind), spec.bits, spec.hadamard ? " (Hadamard domain)" : "", sum, abs);
    }
  }
  if (!o.json.empty()) {
    std::ofstream js(o.json);
    QUEST_CHECK(js << out.dump(2) << "\n", "cannot write '{}'", o.json);
  }
}
}  // namespace

void add_inspect_command(CLI::App& app) {
  auto o = std::make_shared<InspectOptions>();
  CLI::App* cmd = app.add_subcommand("inspect", "List the header and tensors of a safetensors file (any, or a quest export)");
  cmd->add_option("file", o->file, "A .safetensors file")->required();
  cmd->add_option("--json", o->json, "Also write the listing to this JSON file");
  cmd->callback([o] { run_inspect(*o); });
}

}  // namespace quest::cli
