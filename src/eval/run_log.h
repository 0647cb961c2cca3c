#pragma once
// The series `quest plot` draws, read from a run's log.jsonl (written by the trainer):
//   {"type":"train","step":S,"loss":L,"lr":R,"tokens":N,...}
//   {"type":"eval","step":S,"val_loss":L,...}
//   {"type":"masks","step":S,"mean_w_masked":F,"mean_x_masked":F,...}
// A resumed run appends to its log, so a step may appear twice: the last record wins. Eval and
// mask records carry steps only; their token counts come from the train records' tokens per step.
#include <cstdint>
#include <string>
#include <vector>

namespace quest {

struct RunSeries {
  std::string name;  // the run directory's name
  std::vector<double> train_tokens, train_loss, lr;
  std::vector<double> eval_tokens, eval_loss;
  std::vector<double> mask_tokens, w_masked, x_masked;  // fractions in [0, 1]
  int64_t bad_lines = 0;  // unparsable lines skipped (e.g. a last line cut by a crash)
};

// path: a run directory (holding log.jsonl) or a log file. Throws quest::Error when it has no
// train records.
RunSeries read_run_log(const std::string& path);

}  // namespace quest
