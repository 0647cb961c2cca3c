#pragma once
// Everything a training run is configured by. The CLI fills it from defaults, an optional config
// file and command-line overrides; the trainer only reads it.
#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <string>

#include "model/config.h"
#include "quant/quant_spec.h"
#include "train/adamw.h"
#include "train/schedule.h"

namespace quest {

struct TrainConfig {
  ModelConfig model = model_preset("tiny");
  QuantConfig quant;                 // none: full precision
  bool allow_quant_change = false;   // resume a checkpoint under a different quantization

  // Data: a directory of prepared shards (train-*.bin, val-*.bin, meta.json), or empty for the
  // default corpus (Moby Dick from the set-up cache, prepared on first use).
  std::string data;
  std::string train_split = "train", val_split = "val";

  int64_t batch_size = 8;   // sequences per micro-batch
  int64_t grad_accum = 1;   // micro-batches per optimizer step
  int64_t steps = 200;      // optimizer steps
  uint64_t seed = 0;        // model init and data order

  ScheduleConfig schedule;
  AdamWConfig adamw;

  int64_t log_every = 10;         // steps between progress lines and train log records
  int64_t eval_every = 50;        // steps between validations (0: only at the end)
  int64_t eval_windows = 0;       // validation windows per evaluation (0: all of them)
  int64_t checkpoint_every = 0;   // steps between checkpoints (0: only at the end)
  std::string out_dir = "runs/default";
  std::string resume;             // checkpoint to continue from
  int64_t threads = 0;            // 0: all cores
  std::string device = "auto";    // cpu | cuda | auto (the GPU when one is present)
  bool lowbit_product = true;     // CUDA: int8 forward products where the quantizers allow (EngineOptions)
  int64_t sample_tokens = 64;     // tokens to sample at the end (0: none)
  std::string sample_prompt = "Call me";

  int64_t tokens_per_step() const { return batch_size * grad_accum * model.seq_len; }
  void validate() const;  // throws quest::Error naming the bad value
};

void to_json(nlohmann::json& j, const TrainConfig& c);

}  // namespace quest
