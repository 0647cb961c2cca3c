// `quest eval CHECKPOINT --data DIR`: validation loss, perplexity and bits per byte.
#include "cli/commands.h"
#include "core/error.h"
#include "core/log.h"
#include "train/evaluate.h"
#include "train/model_io.h"

namespace quest::cli {

namespace {
struct EvalOptions {
  std::string checkpoint, data, split = "val";
  int64_t batch = 8, windows = 0;
};
}  // namespace

void add_eval_command(CLI::App& app) {
  auto o = std::make_shared<EvalOptions>();
  CLI::App* cmd = app.add_subcommand("eval", "Evaluate a checkpoint on a prepared split");
  cmd->add_option("checkpoint", o->checkpoint, "Checkpoint file")->required()->check(CLI::ExistingFile);
  cmd->add_option("--data", o->data, "Prepared data directory or shard pattern")->required();
  cmd->add_option("--split", o->split, "Split name")->capture_default_str();
  cmd->add_option("--batch-size", o->batch, "Windows per forward pass")->check(CLI::Range(1, 4096))->capture_default_str();
  cmd->add_option("--windows", o->windows, "Evaluate the first N windows (0: all)")->check(CLI::NonNegativeNumber)->capture_default_str();
  cmd->callback([o] {
    LoadedModel m = load_model(o->checkpoint, o->batch);
    const TokenDataset data = TokenDataset::open(o->data, o->split);
    if (const auto& meta = data.meta(); meta && meta->tokenizer)
      QUEST_CHECK(*meta->tokenizer == m.tokenizer,
                  "the data was tokenized with '{}' but the model with '{}'", *meta->tokenizer, m.tokenizer);
    const EvalResult r = evaluate_split(*m.model, data, o->batch, o->windows);
    fmt::print("split {}: {} windows of {} tokens\nloss {:.6f}\nperplexity {:.4f}\n", o->split, r.windows,
               m.model->config().seq_len, r.loss, r.perplexity);
    if (r.bits_per_byte) fmt::print("bits per byte {:.6f}\n", *r.bits_per_byte);
  });
}

}  // namespace quest::cli
