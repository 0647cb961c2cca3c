// quest: quantization-aware training of Llama-type models with QuEST.
// The CLI is a thin layer: it parses options, calls the library, and turns quest::Error into a
// message and a non-zero exit.
#include <omp.h>

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <exception>

#include "cli/commands.h"
#include "core/error.h"

extern "C" void openblas_set_num_threads(int);

// OpenMP's and OpenBLAS's idle threads spin by default and take the cores from each other
// (measured: 1.3x slower training on 2 cores). Both read their settings when they load, before
// main(), so quest sets them once and re-executes itself; an explicit setting is kept.
void prefer_passive_threads(char** argv) {
  if (std::getenv("QUEST_NO_REEXEC") || std::getenv("OMP_WAIT_POLICY")) return;
  setenv("OMP_WAIT_POLICY", "passive", 1);
  if (!std::getenv("OPENBLAS_THREAD_TIMEOUT")) setenv("OPENBLAS_THREAD_TIMEOUT", "4", 1);
  setenv("QUEST_NO_REEXEC", "1", 1);
  execv("/proc/self/exe", argv);  // returns only on failure: carry on as we are
}

int main(int argc, char** argv) {
  prefer_passive_threads(argv);
  CLI::App app{"quest: quantization-aware training of Llama-type models (QuEST and baselines)"};
  app.require_subcommand(1);
  app.fallthrough();
  app.add_option_function<int>(
         "--threads",
         [](const int& n) {
           if (n <= 0) return;
           omp_set_num_threads(n);
           openblas_set_num_threads(n);  // products run outside OpenMP regions
         },
         "CPU threads for ops and BLAS (default: all cores)")
      ->check(CLI::NonNegativeNumber)
      ->trigger_on_parse();
  quest::cli::add_train_command(app);
  quest::cli::add_eval_command(app);
  quest::cli::add_generate_command(app);
  quest::cli::add_prepare_command(app);
  quest::cli::add_tokenizer_command(app);
  quest::cli::add_align_command(app);
  quest::cli::add_export_command(app);
  quest::cli::add_inspect_command(app);
  quest::cli::add_plot_command(app);
  quest::cli::add_bench_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const quest::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
  return 0;
}
