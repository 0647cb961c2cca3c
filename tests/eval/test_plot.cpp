// `quest plot`'s pieces: reading run logs (resumed runs, a cut last line), ticks and labels, and
// the SVG (a polyline per series, a legend entry per run, escaped names).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "data/temp_dir.h"
#include "eval/plot_runs.h"
#include "eval/run_log.h"
#include "eval/svg_plot.h"

namespace quest {
namespace {

size_t count(const std::string& s, const std::string& what) {
  size_t n = 0;
  for (size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + 1)) ++n;
  return n;
}

TEST(RunLog, ReadsRecordsLastOneWins) {
  test::TempDir dir;
  std::filesystem::create_directories(dir / "a&b");
  std::ofstream(dir / "a&b/log.jsonl")
      << R"({"type":"train","step":1,"loss":5.0,"lr":0.001,"tokens":100}
{"type":"train","step":2,"loss":4.0,"lr":0.002,"tokens":200}
{"type":"masks","step":2,"mean_w_masked":0.01,"mean_x_masked":0.02}
{"type":"eval","step":2,"val_loss":4.5}
{"type":"train","step":2,"loss":3.9,"lr":0.002,"tokens":200}
{"type":"train","step":3,"loss":3.5,"lr":0.001,"tokens":300}
{"type":"tra)";
  const RunSeries r = read_run_log(dir / "a&b");
  EXPECT_EQ(r.name, "a&b");
  EXPECT_EQ(r.train_tokens, (std::vector<double>{100, 200, 300}));
  EXPECT_EQ(r.train_loss, (std::vector<double>{5.0, 3.9, 3.5}));  // the resumed step 2 wins
  EXPECT_EQ(r.eval_tokens, (std::vector<double>{200}));
  EXPECT_EQ(r.mask_tokens, (std::vector<double>{200}));
  EXPECT_EQ(r.x_masked, (std::vector<double>{0.02}));
  EXPECT_EQ(r.bad_lines, 1);

  const std::string svg = plot_runs_svg({r, r}, "two <runs>");
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  EXPECT_NE(svg.find("</svg>"), std::string::npos);
  EXPECT_NE(svg.find("two &lt;runs&gt;"), std::string::npos);
  EXPECT_EQ(count(svg, ">a&amp;b</text>"), 2u);  // one legend entry per run
  // Per run: train loss, val loss, lr, w masks, x masks.
  EXPECT_EQ(count(svg, "<polyline"), 10u);
  EXPECT_NE(svg.find("validation loss"), std::string::npos);
}

TEST(RunLog, MissingOrEmptyLogsAreErrors) {
  test::TempDir dir;
  EXPECT_THROW(read_run_log(dir.path()), Error);
  std::ofstream(dir / "log.jsonl") << R"({"type":"eval","step":2,"val_loss":4.5})" << "\n";
  EXPECT_THROW(read_run_log(dir.path()), Error);
}

TEST(SvgPlot, TicksAndLabels) {
  EXPECT_EQ(nice_ticks(0, 1, 5), (std::vector<double>{0, 0.2, 0.4, 0.6000000000000001, 0.8, 1}));
  const auto t = nice_ticks(3.1, 7.9, 5);
  EXPECT_EQ(t.front(), 4);
  EXPECT_EQ(t.back(), 7);
  EXPECT_EQ(si_label(1500), "1.5k");
  EXPECT_EQ(si_label(2.5e6), "2.5M");
  EXPECT_EQ(si_label(3e9), "3B");
  EXPECT_EQ(si_label(12), "12");
  EXPECT_EQ(xml_escape("a<b&\"c\">"), "a&lt;b&amp;&quot;c&quot;&gt;");
}

TEST(SvgPlot, EmptyPanelsSayWhy) {
  PlotPanel p;
  p.title = "t";
  p.empty_note = "nothing here";
  const std::string svg = render_svg("x", {p}, {});
  EXPECT_NE(svg.find("nothing here"), std::string::npos);
}

}  // namespace
}  // namespace quest
