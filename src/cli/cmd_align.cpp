// `quest align CHECKPOINT --data DIR`: per-layer cosine similarity between the quantized
// training gradient and the full-precision gradient at the checkpoint's weights.
#include <cmath>

#include "cli/commands.h"
#include "cli/quant_options.h"
#include "core/error.h"
#include "train/checkpoint.h"
#include "train/grad_alignment.h"

namespace quest::cli {

namespace {
struct AlignOptions {
  std::string checkpoint, data, split = "val";
  int64_t batch = 4;
  QuantOptions quant;
};
}  // namespace

void add_align_command(CLI::App& app) {
  auto o = std::make_shared<AlignOptions>();
  CLI::App* cmd = app.add_subcommand(
      "align", "Gradient alignment: cosine of the quantized vs the full-precision gradient per layer");
  cmd->add_option("checkpoint", o->checkpoint, "Checkpoint file")->required()->check(CLI::ExistingFile);
  cmd->add_option("--data", o->data, "Prepared data directory or shard pattern")->required();
  cmd->add_option("--split", o->split, "Split whose first windows form the batch")->capture_default_str();
  cmd->add_option("--batch-size", o->batch, "Windows in the batch")->check(CLI::Range(1, 4096))->capture_default_str();
  add_quant_options(cmd, o->quant);
  // Without quantization options, the checkpoint's own quantization is measured.
  cmd->callback([o] {
    const Checkpoint ck = load_checkpoint(o->checkpoint);
    const auto config = ck.header.at("model").get<ModelConfig>();
    const QuantConfig quant = o->quant.given() ? o->quant.config() : ck.header.at("quant").get<QuantConfig>();
    QUEST_CHECK(quant.quantized(), "nothing to compare: the quantization is none (pass e.g. --quant quest --bits 4)");
    const auto& params = ck.arrays.at("params");
    const TokenDataset data = TokenDataset::open(o->data, o->split);
    // The checkpoint's learned quantizer parameters (LSQ, PACT) when it was trained this way.
    const bool own = ck.header.at("quant").get<QuantConfig>().same_quantization(quant);
    const auto rows = gradient_alignment(config, params, quant, data, o->batch, own ? &ck : nullptr);
    fmt::print("gradient alignment of {} at step {} ({} windows of {} tokens)\n", quant.to_string(),
               ck.header.value("step", 0), o->batch, config.seq_len);
    fmt::print("{:<20} {:>8}\n", "layer", "cosine");
    double sum = 0;
    for (const auto& r : rows) {
      fmt::print("{:<20} {:>8.4f}\n", r.layer, r.cosine);
      sum += r.cosine;
    }
    fmt::print("{:<20} {:>8.4f}\n", "mean", sum / double(rows.size()));
  });
}

}  // namespace quest::cli
