// `quest export MODEL -o OUT.safetensors | --hf DIR`: the packed QuEST file and/or a plain
// Hugging Face directory (docs/EXPORT.md).
#include <filesystem>

#include "cli/commands.h"
#include "core/error.h"
#include "core/log.h"
#include "export/hf_export.h"
#include "export/model_file.h"
#include "export/packed_export.h"

namespace quest::cli {

namespace {
struct ExportOptions {
  std::string model, out, hf, floats = "bf16";
  int64_t reference_tokens = 0;
};

void run_export(const ExportOptions& o) {
  QUEST_CHECK(!o.out.empty() || !o.hf.empty(), "nothing to write: give -o OUT.safetensors and/or --hf DIR");
  ModelFile f = load_model_file(o.model, 1);
  const FloatFormat floats = parse_float_format(o.floats);
  const QuantConfig& q = f.loaded.quant;
  if (!o.out.empty()) {
    PackedExportOptions opt;
    opt.floats = floats;
    if (f.kind == ModelFileKind::PackedExport) opt.codes_from = o.model;
    const auto s = export_packed(f.loaded, o.out, opt);
    fmt::print("packed export: {} ({} bytes): {} quantized layers as {} codes + scales ({} bytes), {} "
               "unquantized layers and the embedding, lm_head and norms as {} ({} bytes)\n",
               o.out, s.file_bytes, s.packed_layers, q.weight.is_none() ? "no" : q.weight.to_string(),
               s.code_bytes, s.float_layers, o.floats, s.float_bytes);
  }
  if (!o.hf.empty()) {
    HfExportOptions opt;
    opt.floats = floats;
    opt.reference_tokens = o.reference_tokens;
    if (!q.input.is_none())
      log_warning("the Hugging Face export runs the layers' inputs in full precision: the activation "
                  "quantizer ({}) has no transformers equivalent",
                  q.input.to_string());
    export_hf(f.loaded, o.hf, opt);
    fmt::print("Hugging Face export: {}/config.json, {}/model.safetensors ({} bytes){}\n", o.hf, o.hf,
               std::filesystem::file_size(o.hf + "/model.safetensors"),
               o.reference_tokens > 0 ? fmt::format(", {}/quest_reference.safetensors", o.hf) : "");
  }
}
}  // namespace

void add_export_command(CLI::App& app) {
  auto o = std::make_shared<ExportOptions>();
  CLI::App* cmd = app.add_subcommand("export", "Export a model: packed QuEST safetensors and/or Hugging Face");
  cmd->add_option("model", o->model, "Checkpoint or packed export")->required();
  cmd->add_option("-o,--out", o->out, "Packed QuEST export to write (.safetensors)");
  cmd->add_option("--hf", o->hf, "Directory for a Hugging Face LlamaForCausalLM export");
  cmd->add_option("--float-format", o->floats,
                  "Embedding, lm_head, norms and unquantized layers: bf16 | f32 (exact) | int8 (per-row "
                  "scale; packed export only)")
      ->check(CLI::IsMember({"bf16", "f32", "int8"}))->capture_default_str();
  cmd->add_option("--hf-reference-tokens", o->reference_tokens,
                  "Also write N seeded tokens and quest's logits for them (quest_reference.safetensors)")
      ->check(CLI::Range(0, 1 << 20));
  cmd->callback([o] { run_export(*o); });
}

}  // namespace quest::cli
