#pragma once
// A small SVG line-chart writer (no dependency): a grid of panels, each with axes, "nice" ticks,
// lines clipped to the plot area, and one legend for the figure.
#include <optional>
#include <string>
#include <vector>

namespace quest {

struct PlotSeries {
  std::string color;  // CSS color
  std::vector<double> x, y;
  bool dashed = false, markers = false;
};

struct PlotPanel {
  std::string title, x_label, y_label;
  std::vector<PlotSeries> series;
  std::optional<double> y_min, y_max;  // unset: from the data
  bool x_si = true;                    // tick labels with k/M/B suffixes
  double y_scale = 1.0;                // tick labels show y * y_scale (e.g. 100 for percent)
  std::string empty_note = "no data";  // shown when no series has points
};

struct LegendEntry {
  std::string label, color;
  bool dashed = false;
};

// panels laid out `columns` to a row.
std::string render_svg(const std::string& title, const std::vector<PlotPanel>& panels,
                       const std::vector<LegendEntry>& legend, int columns = 2);

// Tick positions covering [lo, hi] at a 1-2-5 step, about `target` of them.
std::vector<double> nice_ticks(double lo, double hi, int target = 5);
// 1500 -> "1.5k", 2.5e6 -> "2.5M"; plain numbers otherwise.
std::string si_label(double v);
// &, <, >, " escaped for SVG text.
std::string xml_escape(const std::string& s);

}  // namespace quest
