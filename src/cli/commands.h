#pragma once
// Each `quest <command>` lives in its own file (cmd_<name>.cpp) and registers itself on the app:
// add_<name>_command(app) adds the subcommand, its options and its callback. Callbacks throw
// quest::Error on bad input; main() prints the message and exits non-zero.
#include <CLI/CLI.hpp>

namespace quest::cli {

void add_train_command(CLI::App& app);
void add_eval_command(CLI::App& app);
void add_generate_command(CLI::App& app);
void add_prepare_command(CLI::App& app);
void add_tokenizer_command(CLI::App& app);
void add_align_command(CLI::App& app);
void add_export_command(CLI::App& app);
void add_inspect_command(CLI::App& app);
void add_plot_command(CLI::App& app);
void add_bench_command(CLI::App& app);

}  // namespace quest::cli
