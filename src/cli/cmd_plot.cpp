// `quest plot RUN_DIR... -o plot.svg`: loss against tokens, learning rate and masked fractions of
// one or more runs, from their log.jsonl, as an SVG with a legend per run.
#include "cli/commands.h"
#include "core/error.h"
#include "core/file_io.h"
#include "core/log.h"
#include "eval/plot_runs.h"

namespace quest::cli {

namespace {
struct PlotOptions {
  std::vector<std::string> runs;
  std::string out = "plot.svg", title = "quest runs";
};

void run_plot(const PlotOptions& o) {
  std::vector<RunSeries> runs;
  for (const auto& r : o.runs) {
    runs.push_back(read_run_log(r));
    if (runs.back().bad_lines)
      log_warning("{}: skipped {} unreadable log lines", r, runs.back().bad_lines);
  }
  AtomicFile file(o.out);
  file.write(plot_runs_svg(runs, o.title));
  file.commit();
  fmt::print("wrote {} ({} run{})\n", o.out, runs.size(), runs.size() == 1 ? "" : "s");
}
}  // namespace

void add_plot_command(CLI::App& app) {
  auto o = std::make_shared<PlotOptions>();
  CLI::App* cmd = app.add_subcommand("plot", "Plot runs' logs (loss, learning rate, masked fractions) as SVG");
  cmd->add_option("runs", o->runs, "Run directories (holding log.jsonl) or log files")->required();
  cmd->add_option("-o,--out", o->out, "SVG file to write")->capture_default_str();
  cmd->add_option("--title", o->title, "Figure title")->capture_default_str();
  cmd->callback([o] { run_plot(*o); });
}

}  // namespace quest::cli
