#include "eval/plot_runs.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "eval/svg_plot.h"

namespace quest {

namespace {
// Colour-blind-friendly palette (Okabe-Ito), then repeats.
constexpr const char* kColors[] = {"#0072B2", "#D55E00", "#009E73", "#CC79A7",
                                   "#E69F00", "#56B4E9", "#000000", "#F0E442"};
}  // namespace

std::string plot_runs_svg(const std::vector<RunSeries>& runs, const std::string& title) {
  PlotPanel loss{"Loss", "tokens", "loss (nats/token)", {}, {}, {}, true, 1.0, "no loss records"};
  PlotPanel lr{"Learning rate", "tokens", "learning rate", {}, {}, {}, true, 1.0, "no learning-rate records"};
  PlotPanel wm{"Weights masked by the quantizer", "tokens", "masked (%)", {}, {}, {}, true, 100.0,
               "no mask records (unquantized runs have none)"};
  PlotPanel xm{"Inputs masked by the quantizer", "tokens", "masked (%)", {}, {}, {}, true, 100.0,
               "no mask records (unquantized runs have none)"};
  std::vector<LegendEntry> legend;
  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  for (size_t i = 0; i < runs.size(); ++i) {
    const RunSeries& r = runs[i];
    const std::string color = kColors[i % std::size(kColors)];
    legend.push_back({r.name, color, false});
    loss.series.push_back({color, r.train_tokens, r.train_loss, false, false});
    if (!r.eval_tokens.empty()) loss.series.push_back({color, r.eval_tokens, r.eval_loss, true, true});
    lr.series.push_back({color, r.train_tokens, r.lr, false, false});
    wm.series.push_back({color, r.mask_tokens, r.w_masked, false, r.mask_tokens.size() < 30});
    xm.series.push_back({color, r.mask_tokens, r.x_masked, false, r.mask_tokens.size() < 30});
    const double end = r.train_tokens.empty() ? 0.0 : r.train_tokens.back();
    auto range = [&](const std::vector<double>& x, const std::vector<double>& y) {
      for (size_t k = 0; k < x.size(); ++k) {
        lo = std::min(lo, y[k]);
        if (x[k] >= 0.05 * end || x.size() <= 2) hi = std::max(hi, y[k]);
      }
    };
    range(r.train_tokens, r.train_loss);
    range(r.eval_tokens, r.eval_loss);
  }
  if (hi > lo) loss.y_min = lo - 0.04 * (hi - lo), loss.y_max = hi + 0.04 * (hi - lo);
  bool any_eval = false;
  for (const auto& r : runs) any_eval |= !r.eval_tokens.empty();
  if (any_eval) {
    legend.push_back({"training loss", "#666", false});
    legend.push_back({"validation loss", "#666", true});
  }
  return render_svg(title, {loss, lr, wm, xm}, legend, 2);
}

}  // namespace quest
