// `quest tokenizer train`: a SentencePiece BPE model for a corpus (data/tokenizer_train.h).
#include <omp.h>

#include "cli/commands.h"
#include "core/log.h"
#include "data/tokenizer_train.h"

namespace quest::cli {

namespace {
struct TokenizerCli {
  TokenizerTrainOptions opt;
  std::string format = "auto";
};
}  // namespace

void add_tokenizer_command(CLI::App& app) {
  CLI::App* tok = app.add_subcommand("tokenizer", "Tokenizer tools");
  tok->require_subcommand(1);
  auto c = std::make_shared<TokenizerCli>();
  TokenizerTrainOptions& o = c->opt;
  CLI::App* cmd = tok->add_subcommand(
      "train",
      "Train a SentencePiece BPE model (byte fallback on, identity normalization: any text "
      "round-trips) on a seeded sample of the corpus's lines. Use it with `quest prepare "
      "--tokenizer MODEL.model`.");
  cmd->add_option("inputs", o.inputs, "Input files, directories or glob patterns")->required();
  cmd->add_option("-o,--out", o.output, "The model file to write (e.g. tok8k.model)")->required();
  cmd->add_option("--vocab-size", o.vocab_size, "Vocabulary size (e.g. 1024 or 8192)")
      ->check(CLI::Range(300, 1'000'000))->capture_default_str();
  cmd->add_option("--max-lines", o.max_sentences, "Lines sampled from the corpus for training")
      ->check(CLI::Range(uint64_t{1}, uint64_t{1} << 40))->capture_default_str();
  cmd->add_option("--character-coverage", o.character_coverage,
                  "Share of characters that get their own piece (the rest use byte fallback)")
      ->check(CLI::Range(0.5, 1.0))->capture_default_str();
  cmd->add_option("--seed", o.seed, "Seed of the line sample")->capture_default_str();
  cmd->add_option("--format", c->format, "Input format (as for prepare)")
      ->check(CLI::IsMember({"auto", "text", "jsonl"}))->capture_default_str();
  cmd->add_option("--text-field", o.source.text_field, "JSONL: the field holding the text")
      ->capture_default_str();
  cmd->add_flag("--skip-bad", o.source.skip_bad, "Skip and count bad records instead of stopping");
  cmd->add_flag("--overwrite", o.overwrite, "Replace an existing model file");
  cmd->callback([c] {
    c->opt.source.format = parse_input_format(c->format);
    c->opt.threads = omp_get_max_threads();
    const TokenizerTrainReport r = train_sentencepiece(c->opt);
    log_info("wrote {}: {} pieces, {} ({} of {} lines sampled, {:.1f} s){}", c->opt.output,
             r.vocab_size, r.name, r.sampled_lines, r.lines, r.seconds,
             r.skipped_bad ? fmt::format("; {} bad records skipped", r.skipped_bad) : "");
  });
}

}  // namespace quest::cli
