#include "train/schedule.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace quest {

ScheduleKind parse_schedule_kind(const std::string& name) {
  if (name == "onecycle" || name == "one-cycle") return ScheduleKind::OneCycle;
  if (name == "constant") return ScheduleKind::Constant;
  if (name == "wsd" || name == "warmup-stable-decay") return ScheduleKind::WarmupStableDecay;
  fail("unknown schedule '{}' (known: onecycle, constant, wsd)", name);
}

std::string schedule_kind_name(ScheduleKind kind) {
  switch (kind) {
    case ScheduleKind::OneCycle: return "onecycle";
    case ScheduleKind::Constant: return "constant";
    case ScheduleKind::WarmupStableDecay: return "wsd";
  }
  return "?";
}

namespace {
// Cosine interpolation from `from` (pct = 0) to `to` (pct = 1).
double cosine(double from, double to, double pct) {
  return to + (from - to) / 2.0 * (1.0 + std::cos(M_PI * pct));
}
}  // namespace

double learning_rate(const ScheduleConfig& cfg, int64_t step, int64_t total) {
  const double peak = cfg.peak_lr;
  const int64_t warmup = std::max<int64_t>(1, static_cast<int64_t>(cfg.warmup_fraction * total));
  switch (cfg.kind) {
    case ScheduleKind::Constant:
      if (cfg.warmup_fraction > 0 && step < warmup) return peak * double(step + 1) / double(warmup);
      return peak;
    case ScheduleKind::OneCycle: {
      // As torch's OneCycleLR: phase 1 ends at step warmup - 1, phase 2 at total - 1.
      const double start = peak / cfg.initial_div, end = peak / cfg.final_div;
      const double w_end = double(warmup - 1), last = double(total - 1);
      if (step <= w_end) return w_end <= 0 ? peak : cosine(start, peak, step / w_end);
      if (last <= w_end) return end;
      return cosine(peak, end, std::min(1.0, (step - w_end) / (last - w_end)));
    }
    case ScheduleKind::WarmupStableDecay: {
      const int64_t decay = std::max<int64_t>(1, static_cast<int64_t>(cfg.decay_fraction * total));
      const double end = peak / cfg.final_div;
      if (step < warmup) return peak * double(step + 1) / double(warmup);
      const int64_t decay_start = total - decay;
      if (step < decay_start) return peak;
      const double pct = decay <= 1 ? 1.0 : double(step - decay_start) / double(decay - 1);
      return peak + (end - peak) * std::min(1.0, pct);
    }
  }
  return peak;
}

}  // namespace quest
