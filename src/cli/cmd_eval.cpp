// `quest eval MODEL [--data DIR] [--hellaswag FILE] [--device D]`: validation loss, perplexity and
// bits per byte of a checkpoint or packed export on a prepared split; HellaSwag zero-shot accuracy;
// for an export, its size raw and zstd-compressed. On the CPU the loaded model computes; on the GPU
// an engine takes its weights (Engine::load_model), and both feed the same evaluation code.
#include <omp.h>

#include <chrono>
#include <climits>
#include <fstream>
#include <memory>
#include <optional>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "core/error.h"
#include "core/log.h"
#include "data/load_tokenizer.h"
#include "eval/artifact_size.h"
#include "eval/data_check.h"
#include "eval/hellaswag.h"
#include "export/model_file.h"
#include "train/engine.h"
#include "train/evaluate.h"

namespace quest::cli {

namespace {
struct EvalOptions {
  std::string model, data, split = "val", hellaswag, tokenizer, json, device = "auto";
  int64_t batch = 8, windows = 0, limit = 0;
  int zstd_level = 19;
  bool prepend_eot = false, lowbit_product = true;
};

void run_eval(const EvalOptions& o) {
  const bool gpu = resolve_device(o.device) == "cuda";
  // On the GPU the CPU model only carries the weights to the engine: planned for one sequence.
  ModelFile f = load_model_file(o.model, gpu ? 1 : o.batch);
  Model& model = *f.loaded.model;
  const bool exported = f.kind == ModelFileKind::PackedExport;
  QUEST_CHECK(!o.data.empty() || !o.hellaswag.empty() || exported,
              "nothing to evaluate: give --data DIR and/or --hellaswag FILE");
  // Every input is checked against the model before any long computation.
  std::optional<TokenDataset> data;
  if (!o.data.empty()) {
    data = TokenDataset::open(o.data, o.split);
    check_data_matches_model(f.loaded.tokenizer, model.config(), *data);
  }
  std::unique_ptr<Tokenizer> tokenizer;
  std::vector<HellaswagItem> items;
  if (!o.hellaswag.empty()) {
    tokenizer = load_tokenizer(o.tokenizer.empty() ? f.loaded.tokenizer : o.tokenizer);
    check_tokenizer_matches_model(f.loaded.tokenizer, model.config(), *tokenizer);
    items = read_hellaswag(o.hellaswag, o.limit);
  }

  std::unique_ptr<Engine> engine;
  if (gpu) {
    // A packed export's product weights carry no integer codes: its layers multiply in bf16.
    EngineOptions options;
    options.lowbit_product = o.lowbit_product;
    engine = make_engine("cuda", model.config(), f.loaded.quant, AdamWConfig{}, o.batch, options);
    engine->load_model(model);
  }
  // Per-token losses (when `losses` is not null) and their sum, on the chosen device.
  auto forward_loss = [&](const int32_t* x, const int32_t* y, int64_t B, int64_t T, float* losses) {
    return engine ? engine->forward_loss(x, y, B, T, losses) : model.forward_loss(x, y, B, T, losses);
  };
  const std::string device = engine ? engine->device() : "cpu";

  nlohmann::json out = {{"model", o.model},
                        {"device", device},
                        {"kind", exported ? "packed export" : "checkpoint"},
                        {"step", f.loaded.step},
                        {"quant", f.loaded.quant.to_string()},
                        {"tokenizer", f.loaded.tokenizer}};
  fmt::print("model: {} ({}, step {}, tokenizer {})\nquantization: {}\ndevice: {}\n", o.model,
             out["kind"].get<std::string>(), f.loaded.step, f.loaded.tokenizer, f.loaded.quant.describe(), device);
  if (exported) {
    const ArtifactSize s = artifact_size(o.model, o.zstd_level, omp_get_max_threads());
    fmt::print("artifact: {} bytes raw, {} bytes zstd -{} ({:.1f}%)\n", s.raw, s.zstd, s.level,
               100.0 * double(s.zstd) / double(std::max<uint64_t>(s.raw, 1)));
    out["artifact"] = {{"raw_bytes", s.raw}, {"zstd_bytes", s.zstd}, {"zstd_level", s.level}};
  }
  if (data) {
    // The model's loss, with a progress line after each batch.
    const auto start = std::chrono::steady_clock::now();
    const int64_t T = model.config().seq_len;
    const int64_t total = std::min<int64_t>(o.windows > 0 ? o.windows : INT64_MAX, int64_t((data->size() - 1) / uint64_t(T)));
    int64_t done = 0;
    const EvalResult r = evaluate_split(
        [&](const int32_t* x, const int32_t* y, int64_t B, int64_t len) {
          const double loss = forward_loss(x, y, B, len, nullptr);
          done += B;
          const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
          log_progress("{} {:>6}/{} windows | ETA {}", o.split, done, total,
                       format_duration(secs / double(done) * double(std::max<int64_t>(total - done, 0))));
          return loss;
        },
        T, *data, o.batch, o.windows);
    fmt::print("split {}: {} windows of {} tokens{}\nloss {:.6f}\nperplexity {:.4f}\n", o.split, r.windows,
               model.config().seq_len, o.windows ? " (the first ones only)" : "", r.loss, r.perplexity);
    if (r.bits_per_byte) fmt::print("bits per byte {:.6f}\n", *r.bits_per_byte);
    out["split"] = {{"name", o.split}, {"windows", r.windows}, {"tokens", r.tokens}, {"loss", r.loss},
                    {"perplexity", r.perplexity}};
    if (r.bits_per_byte) out["split"]["bits_per_byte"] = *r.bits_per_byte;
  }
  if (tokenizer) {
    ModelScorer scorer([&](const int32_t* x, const int32_t* y, int64_t B, int64_t T,
                           float* losses) { forward_loss(x, y, B, T, losses); },
                       o.batch, model.config().seq_len);
    HellaswagOptions ho;
    ho.items_per_call = std::max<int64_t>(1, o.batch);
    ho.prepend_eot = o.prepend_eot;
    const HellaswagResult r = evaluate_hellaswag(items, *tokenizer, scorer, ho);
    fmt::print("hellaswag: {} items, acc {:.4f} (+- {:.4f}), acc_norm {:.4f} (+- {:.4f})\n", r.items, r.acc(),
               r.acc_stderr(), r.acc_norm(), r.acc_norm_stderr());
    out["hellaswag"] = {{"items", r.items}, {"acc", r.acc()}, {"acc_stderr", r.acc_stderr()},
                        {"acc_norm", r.acc_norm()}, {"acc_norm_stderr", r.acc_norm_stderr()},
                        {"prepend_eot", o.prepend_eot}};
  }
  if (!o.json.empty()) {
    std::ofstream js(o.json);
    QUEST_CHECK(js << out.dump(2) << "\n", "cannot write '{}'", o.json);
  }
}
}  // namespace

void add_eval_command(CLI::App& app) {
  auto o = std::make_shared<EvalOptions>();
  CLI::App* cmd = app.add_subcommand(
      "eval", "Evaluate a checkpoint or packed export on the CPU or GPU: validation loss / bits per byte, HellaSwag, size");
  cmd->add_option("model", o->model, "Checkpoint (checkpoint.bin) or packed export (.safetensors)")->required();
  cmd->add_option("--data", o->data, "Prepared data directory or shard pattern");
  cmd->add_option("--split", o->split, "Split name")->capture_default_str();
  cmd->add_option("--batch-size", o->batch, "Sequences per forward pass")->check(CLI::Range(1, 4096))->capture_default_str();
  cmd->add_option("--device", o->device, "cpu, cuda, or auto (the GPU when one is present)")
      ->check(CLI::IsMember({"cpu", "cuda", "auto"}))->capture_default_str();
  cmd->add_option("--lowbit-product", o->lowbit_product,
                  "GPU, checkpoints: int8 forward products as in training (false: bf16 products, as an export's)")
      ->capture_default_str();
  cmd->add_option("--windows", o->windows, "Evaluate the first N windows of the split (0: all)")->check(CLI::NonNegativeNumber)->capture_default_str();
  cmd->add_option("--hellaswag", o->hellaswag, "HellaSwag JSONL (ctx, endings, label; .zst allowed)")->check(CLI::ExistingFile);
  cmd->add_option("--limit", o->limit, "HellaSwag: the first N items (0: all)")->check(CLI::NonNegativeNumber)->capture_default_str();
  cmd->add_flag("--prepend-eot", o->prepend_eot, "HellaSwag: start each context with end-of-text (lm-eval does not)");
  cmd->add_option("--tokenizer", o->tokenizer, "Tokenizer for HellaSwag (default: the model's; must match it)");
  cmd->add_option("--zstd-level", o->zstd_level, "zstd level of the compressed artifact size")->check(CLI::Range(1, 22))->capture_default_str();
  cmd->add_option("--json", o->json, "Also write the results to this JSON file");
  cmd->callback([o] { run_eval(*o); });
}

}  // namespace quest::cli
