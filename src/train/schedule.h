#pragma once
// Learning-rate schedules, as a function of the optimizer step (0-based) and the run's length.
#include <cstdint>
#include <string>

namespace quest {

enum class ScheduleKind { OneCycle, Constant, WarmupStableDecay };

struct ScheduleConfig {
  ScheduleKind kind = ScheduleKind::OneCycle;
  double peak_lr = 1.2e-3;
  double warmup_fraction = 0.1;  // one-cycle and WSD: share of steps spent warming up
  double decay_fraction = 0.2;   // WSD: share of steps spent decaying at the end
  double initial_div = 100.0;    // warmup starts at peak / initial_div
  double final_div = 10.0;       // the last step ends at peak / final_div
};

ScheduleKind parse_schedule_kind(const std::string& name);  // "onecycle", "constant", "wsd"
std::string schedule_kind_name(ScheduleKind kind);

// One-cycle (QUEST_SPEC.md section 6, the reference's torch OneCycleLR with cosine annealing):
// warmup over the first max(1, steps/10) steps from peak/100 to peak along a half cosine, then
// cosine decay to peak/10 at the last step. Constant: peak throughout (warmup too, if asked for).
// Warmup-stable-decay: linear warmup, constant, then linear decay to peak/final_div.
double learning_rate(const ScheduleConfig& cfg, int64_t step, int64_t total_steps);

}  // namespace quest
