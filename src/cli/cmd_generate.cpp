// `quest generate MODEL`: sample a continuation of a prompt (a checkpoint or packed export).
#include "cli/commands.h"
#include "cli/sample_text.h"
#include "core/log.h"
#include "export/model_file.h"

namespace quest::cli {

namespace {
struct GenerateOptions {
  std::string checkpoint, prompt = "The ", tokenizer;
  SampleOptions sample;
  bool no_cache = false;
};
}  // namespace

void add_generate_command(CLI::App& app) {
  auto o = std::make_shared<GenerateOptions>();
  CLI::App* cmd = app.add_subcommand("generate", "Sample text from a checkpoint or packed export");
  cmd->add_option("checkpoint", o->checkpoint, "Checkpoint (e.g. runs/default/checkpoint.bin) or packed export (.safetensors)")
      ->required()->check(CLI::ExistingFile);
  cmd->add_option("-p,--prompt", o->prompt, "Text to continue")->capture_default_str();
  cmd->add_option("-n,--tokens", o->sample.max_new_tokens, "Tokens to generate")
      ->check(CLI::Range(1, 1 << 20))->capture_default_str();
  cmd->add_option("-t,--temperature", o->sample.temperature, "Sampling temperature (0: greedy)")
      ->check(CLI::Range(0.0, 100.0))->capture_default_str();
  cmd->add_option("-k,--top-k", o->sample.top_k, "Sample among the k likeliest tokens (0: all)")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  cmd->add_option("--seed", o->sample.seed, "Sampling seed")->capture_default_str();
  cmd->add_option("--tokenizer", o->tokenizer, "Override the checkpoint's tokenizer");
  cmd->add_flag("--no-cache", o->no_cache, "Recompute the whole context for each token (slow; for checks)");
  cmd->callback([o] {
    LoadedModel m = load_model_file(o->checkpoint).loaded;
    auto tokenizer = tokenizer_for(o->tokenizer.empty() ? m.tokenizer : o->tokenizer);
    o->sample.use_cache = !o->no_cache;
    print_sample(*m.model, *tokenizer, o->prompt, o->sample);
  });
}

}  // namespace quest::cli
