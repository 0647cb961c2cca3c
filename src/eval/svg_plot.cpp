#include "eval/svg_plot.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace quest {

namespace {
constexpr double kPanelW = 560, kPanelH = 340, kLeft = 70, kRight = 20, kTop = 34, kBottom = 46;
constexpr double kTitleH = 40, kLegendRow = 22;

std::string num(double v) { return fmt::format("{:.2f}", v); }

std::string tick_label(double v, double step) {
  if (std::fabs(v) < step * 1e-6) return "0";
  const int decimals = std::max(0, -int(std::floor(std::log10(step) + 1e-9)));
  return fmt::format("{:.{}f}", v, std::min(decimals, 8));
}
}  // namespace

std::string xml_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string si_label(double v) {
  const double a = std::fabs(v);
  auto trim = [](std::string s) {
    if (s.find('.') != std::string::npos) {
      while (s.back() == '0') s.pop_back();
      if (s.back() == '.') s.pop_back();
    }
    return s;
  };
  if (a >= 1e9) return trim(fmt::format("{:.2f}", v / 1e9)) + "B";
  if (a >= 1e6) return trim(fmt::format("{:.2f}", v / 1e6)) + "M";
  if (a >= 1e3) return trim(fmt::format("{:.2f}", v / 1e3)) + "k";
  return trim(fmt::format("{:.3f}", v));
}

std::vector<double> nice_ticks(double lo, double hi, int target) {
  if (!(hi > lo)) return {lo};
  const double raw = (hi - lo) / std::max(target, 1);
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (raw <= m * mag) {
      step = m * mag;
      break;
    }
  std::vector<double> t;
  for (double v = std::ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step) t.push_back(v);
  return t;
}

std::string render_svg(const std::string& title, const std::vector<PlotPanel>& panels,
                       const std::vector<LegendEntry>& legend, int columns) {
  columns = std::max(1, std::min<int>(columns, int(panels.size())));
  const int rows = int((panels.size() + size_t(columns) - 1) / size_t(columns));
  const int legend_rows = int((legend.size() + 2) / 3);
  const double top = kTitleH + legend_rows * kLegendRow + 8;
  const double W = columns * kPanelW, H = top + rows * kPanelH;
  std::string s = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" viewBox=\"0 0 {0} {1}\" "
      "font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      "<text x=\"{2}\" y=\"26\" font-size=\"18\" text-anchor=\"middle\">{3}</text>\n",
      num(W), num(H), num(W / 2), xml_escape(title));
  for (size_t i = 0; i < legend.size(); ++i) {
    const double x = 20 + double(i % 3) * (W - 40) / 3, y = kTitleH + double(i / 3) * kLegendRow + 8;
    s += fmt::format("<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{}\" stroke-width=\"3\"{}/>"
                     "<text x=\"{}\" y=\"{}\">{}</text>\n",
                     num(x), num(y), num(x + 28), num(y), legend[i].color,
                     legend[i].dashed ? " stroke-dasharray=\"6 4\"" : "", num(x + 34), num(y + 4),
                     xml_escape(legend[i].label));
  }
  for (size_t p = 0; p < panels.size(); ++p) {
    const PlotPanel& panel = panels[p];
    const double ox = double(p % size_t(columns)) * kPanelW, oy = top + double(p / size_t(columns)) * kPanelH;
    const double px = ox + kLeft, py = oy + kTop, pw = kPanelW - kLeft - kRight, ph = kPanelH - kTop - kBottom;
    s += fmt::format("<text x=\"{}\" y=\"{}\" font-size=\"14\" text-anchor=\"middle\">{}</text>\n",
                     num(px + pw / 2), num(oy + 22), xml_escape(panel.title));
    double x0 = std::numeric_limits<double>::infinity(), x1 = -x0, y0 = x0, y1 = -x0;
    for (const auto& ser : panel.series)
      for (size_t i = 0; i < ser.x.size() && i < ser.y.size(); ++i) {
        if (!std::isfinite(ser.x[i]) || !std::isfinite(ser.y[i])) continue;
        x0 = std::min(x0, ser.x[i]), x1 = std::max(x1, ser.x[i]);
        y0 = std::min(y0, ser.y[i]), y1 = std::max(y1, ser.y[i]);
      }
    s += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#444\"/>\n",
                     num(px), num(py), num(pw), num(ph));
    if (!(x1 >= x0)) {
      s += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"#888\">{}</text>\n",
                       num(px + pw / 2), num(py + ph / 2), xml_escape(panel.empty_note));
      continue;
    }
    if (panel.y_min) y0 = *panel.y_min;
    if (panel.y_max) y1 = *panel.y_max;
    if (x1 == x0) x0 -= 0.5, x1 += 0.5;
    if (!(y1 > y0)) {
      const double pad = std::max(std::fabs(y0) * 0.05, 1e-12);
      y0 -= pad, y1 += pad;
    } else {
      const double pad = (y1 - y0) * 0.04;
      y0 -= panel.y_min ? 0 : pad, y1 += panel.y_max ? 0 : pad;
    }
    auto X = [&](double v) { return px + (v - x0) / (x1 - x0) * pw; };
    auto Y = [&](double v) { return py + ph - (v - y0) / (y1 - y0) * ph; };
    const auto xt = nice_ticks(x0, x1, 6), yt = nice_ticks(y0 * panel.y_scale, y1 * panel.y_scale, 6);
    const double ystep = yt.size() > 1 ? yt[1] - yt[0] : 1.0, xstep = xt.size() > 1 ? xt[1] - xt[0] : 1.0;
    for (double v : xt)
      s += fmt::format("<line x1=\"{0}\" y1=\"{1}\" x2=\"{0}\" y2=\"{2}\" stroke=\"#ddd\"/>"
                       "<text x=\"{0}\" y=\"{3}\" text-anchor=\"middle\">{4}</text>\n",
                       num(X(v)), num(py), num(py + ph), num(py + ph + 16),
                       panel.x_si ? si_label(v) : tick_label(v, xstep));
    for (double v : yt)
      s += fmt::format("<line x1=\"{0}\" y1=\"{1}\" x2=\"{2}\" y2=\"{1}\" stroke=\"#ddd\"/>"
                       "<text x=\"{3}\" y=\"{4}\" text-anchor=\"end\">{5}</text>\n",
                       num(px), num(Y(v / panel.y_scale)), num(px + pw), num(px - 6),
                       num(Y(v / panel.y_scale) + 4), tick_label(v, ystep));
    s += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n", num(px + pw / 2),
                     num(py + ph + 36), xml_escape(panel.x_label));
    s += fmt::format("<text transform=\"translate({},{}) rotate(-90)\" text-anchor=\"middle\">{}</text>\n",
                     num(ox + 16), num(py + ph / 2), xml_escape(panel.y_label));
    s += fmt::format("<clipPath id=\"clip{}\"><rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\"/></clipPath>\n",
                     p, num(px), num(py), num(pw), num(ph));
    s += fmt::format("<g clip-path=\"url(#clip{})\">\n", p);
    for (const auto& ser : panel.series) {
      std::string pts;
      for (size_t i = 0; i < ser.x.size() && i < ser.y.size(); ++i)
        if (std::isfinite(ser.x[i]) && std::isfinite(ser.y[i]))
          pts += fmt::format("{},{} ", num(X(ser.x[i])), num(Y(ser.y[i])));
      if (pts.empty()) continue;
      s += fmt::format("<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"1.6\"{} points=\"{}\"/>\n",
                       ser.color, ser.dashed ? " stroke-dasharray=\"6 4\"" : "", pts);
      if (ser.markers)
        for (size_t i = 0; i < ser.x.size() && i < ser.y.size(); ++i)
          if (std::isfinite(ser.x[i]) && std::isfinite(ser.y[i]))
            s += fmt::format("<circle cx=\"{}\" cy=\"{}\" r=\"3\" fill=\"{}\"/>\n", num(X(ser.x[i])),
                             num(Y(ser.y[i])), ser.color);
    }
    s += "</g>\n";
  }
  return s + "</svg>\n";
}

}  // namespace quest
