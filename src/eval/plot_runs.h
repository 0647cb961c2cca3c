#pragma once
// `quest plot`: the figure of one or more runs (run_log.h) as SVG: training loss (lines) and
// validation loss (dashed, with markers) against tokens, the learning rate, and the masked
// fractions of weights and inputs; one colour per run, named in the legend.
#include <string>
#include <vector>

#include "eval/run_log.h"

namespace quest {

// The loss panel's y range leaves out the first 5% of each run's tokens (the initial loss, far
// above the rest, would flatten everything else); the lines run off the top there.
std::string plot_runs_svg(const std::vector<RunSeries>& runs, const std::string& title = "quest runs");

}  // namespace quest
