// `quest prepare INPUT... -o DIR`: corpus files -> token shards + meta.json (data/prepare.h).
#include <omp.h>

#include <atomic>
#include <csignal>

#include "cli/commands.h"
#include "core/error.h"
#include "core/log.h"
#include "data/load_tokenizer.h"
#include "data/prepare.h"

namespace quest::cli {

namespace {

struct PrepareCli {
  PrepareOptions opt;
  std::string format = "auto", eot = "before";
  double val_fraction = -1;
  int64_t val_documents = -1;
};

// Ctrl-C asks the run to stop cleanly (deleting its shards); a second one kills it.
std::atomic<bool> g_interrupted{false};
extern "C" void on_interrupt(int sig) {
  g_interrupted = true;
  std::signal(sig, SIG_DFL);
}

std::string describe(const SplitReport& s) {
  return fmt::format("{} documents, {:.2f} MB of text, {} tokens in {} shard(s){}", s.documents,
                     double(s.text_bytes) / 1e6, s.tokens, s.files.size(),
                     s.skipped_bad ? fmt::format(", {} bad records skipped", s.skipped_bad) : "");
}

void run_prepare(PrepareCli& c) {
  PrepareOptions& o = c.opt;
  o.format = parse_input_format(c.format);
  o.eot = parse_eot_position(c.eot);
  if (c.val_fraction >= 0) o.val_fraction = c.val_fraction;
  if (c.val_documents >= 0) o.val_documents = uint64_t(c.val_documents);
  o.threads = omp_get_max_threads();  // the global --threads (default: all cores)
  const auto tokenizer = load_tokenizer(o.tokenizer);
  g_interrupted = false;
  o.cancel = &g_interrupted;
  auto old_int = std::signal(SIGINT, on_interrupt);
  auto old_term = std::signal(SIGTERM, on_interrupt);
  PrepareReport r;
  try {
    r = prepare_corpus(o, *tokenizer);
  } catch (...) {
    std::signal(SIGINT, old_int);
    std::signal(SIGTERM, old_term);
    throw;
  }
  std::signal(SIGINT, old_int);
  std::signal(SIGTERM, old_term);
  log_info("prepared {} with {} (vocabulary {}) in {:.1f} s, {} thread(s): {:.1f} MB/s of text",
           o.out_dir, r.tokenizer, r.vocab_size, r.seconds, r.threads,
           double(r.train.text_bytes + r.val.text_bytes) / 1e6 / std::max(r.seconds, 1e-9));
  log_info("  train: {}", describe(r.train));
  log_info("  val:   {}", describe(r.val));
  if (r.skipped_bad) log_warning("{} bad records were skipped (--skip-bad)", r.skipped_bad);
}

}  // namespace

void add_prepare_command(CLI::App& app) {
  auto c = std::make_shared<PrepareCli>();
  PrepareOptions& o = c->opt;
  CLI::App* cmd = app.add_subcommand(
      "prepare",
      "Tokenize a corpus into llm.c-format shards: OUT/train-000000.bin..., OUT/val-000000.bin..., "
      "OUT/meta.json.\nInputs: plain text or JSONL files, optionally .zst, given as files, "
      "directories or glob patterns.\nTokenization uses all cores (or the global --threads); the "
      "output does not depend on the thread count.");
  cmd->add_option("inputs", o.inputs, "Input files, directories or glob patterns")->required();
  cmd->add_option("-o,--out", o.out_dir, "Output directory")->required();
  cmd->add_option("--tokenizer", o.tokenizer,
                  "gpt2 (the set-up's cached files), gpt2:DIR, or a SentencePiece .model file")
      ->capture_default_str();
  cmd->add_option("--format", c->format,
                  "Input format; auto: .jsonl/.json/.ndjson (optionally .zst) are JSONL, the rest "
                  "plain text")
      ->check(CLI::IsMember({"auto", "text", "jsonl"}))->capture_default_str();
  cmd->add_option("--text-field", o.text_field, "JSONL: the field holding the document text")
      ->capture_default_str();
  cmd->add_option("--split-blank-lines", o.split_blank_lines,
                  "Plain text: a run of N or more blank lines separates documents (0: one file is "
                  "one document)")
      ->check(CLI::Range(0, 1 << 20))->capture_default_str();
  auto* frac = cmd->add_option("--val-fraction", c->val_fraction,
                               "Fraction of the documents for validation, chosen by a seeded "
                               "hash of each document's index (default 0.05, or 0 with "
                               "--val-inputs)")
                   ->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--val-documents", c->val_documents,
                  "Exactly this many validation documents (seeded; reads the input twice)")
      ->check(CLI::NonNegativeNumber)->excludes(frac);
  cmd->add_option("--val-inputs", o.val_inputs,
                  "Separate validation inputs (repeat the option for several): all their "
                  "documents go to validation")
      ->allow_extra_args(false);
  cmd->add_option("--seed", o.seed, "Seed of the train/validation split")->capture_default_str();
  cmd->add_option("--eot", c->eot, "Put the separator token before or after each document")
      ->check(CLI::IsMember({"before", "after"}))->capture_default_str();
  cmd->add_option("--shard-tokens", o.shard_tokens, "Tokens per shard")
      ->check(CLI::Range(uint64_t{1}, uint64_t{0x7fffffff}))->capture_default_str();
  cmd->add_flag("--skip-bad", o.skip_bad,
                "Skip and count bad records (invalid JSON or UTF-8, missing field, corrupt zstd) "
                "instead of stopping at the first");
  cmd->add_flag("--overwrite", o.overwrite, "Replace shards and meta.json already in the output");
  cmd->add_flag("!--no-progress", o.progress, "No progress display");
  cmd->callback([c] { run_prepare(*c); });
}

}  // namespace quest::cli
