#include "train/train_config.h"

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace quest {

void TrainConfig::validate() const {
  model.validate();
  quant.validate();
  QUEST_CHECK(batch_size >= 1, "batch_size must be >= 1, got {}", batch_size);
  QUEST_CHECK(grad_accum >= 1, "grad_accum must be >= 1, got {}", grad_accum);
  QUEST_CHECK(steps >= 1, "steps must be >= 1, got {}", steps);
  QUEST_CHECK(schedule.peak_lr > 0 && schedule.peak_lr < 1, "lr must be in (0, 1), got {}",
              schedule.peak_lr);
  QUEST_CHECK(schedule.warmup_fraction >= 0 && schedule.warmup_fraction <= 1,
              "warmup must be a fraction in [0, 1], got {}", schedule.warmup_fraction);
  QUEST_CHECK(schedule.decay_fraction >= 0 && schedule.decay_fraction <= 1,
              "decay must be a fraction in [0, 1], got {}", schedule.decay_fraction);
  QUEST_CHECK(adamw.beta1 >= 0 && adamw.beta1 < 1, "beta1 must be in [0, 1), got {}", adamw.beta1);
  QUEST_CHECK(adamw.beta2 >= 0 && adamw.beta2 < 1, "beta2 must be in [0, 1), got {}", adamw.beta2);
  QUEST_CHECK(adamw.eps > 0, "eps must be positive, got {}", adamw.eps);
  QUEST_CHECK(adamw.weight_decay >= 0, "weight_decay must be >= 0, got {}", adamw.weight_decay);
  QUEST_CHECK(adamw.grad_clip >= 0, "grad_clip must be >= 0, got {}", adamw.grad_clip);
  QUEST_CHECK(log_every >= 1, "log_every must be >= 1, got {}", log_every);
  QUEST_CHECK(eval_every >= 0, "eval_every must be >= 0, got {}", eval_every);
  QUEST_CHECK(eval_windows >= 0, "eval_windows must be >= 0, got {}", eval_windows);
  QUEST_CHECK(checkpoint_every >= 0, "checkpoint_every must be >= 0, got {}", checkpoint_every);
  QUEST_CHECK(threads >= 0, "threads must be >= 0, got {}", threads);
  QUEST_CHECK(sample_tokens >= 0, "sample_tokens must be >= 0, got {}", sample_tokens);
  QUEST_CHECK(!out_dir.empty(), "out_dir must not be empty");
  QUEST_CHECK(device == "cpu" || device == "cuda" || device == "auto",
              "device must be cpu, cuda or auto, got '{}'", device);
}

void to_json(nlohmann::json& j, const TrainConfig& c) {
  j = nlohmann::json{
      {"model", c.model},
      {"quant", c.quant},
      {"quant_description", c.quant.describe()},
      {"data", c.data},
      {"batch_size", c.batch_size},
      {"grad_accum", c.grad_accum},
      {"steps", c.steps},
      {"seed", c.seed},
      {"device", c.device},
      {"lowbit_product", c.lowbit_product},
      {"schedule", {{"kind", schedule_kind_name(c.schedule.kind)},
                    {"lr", c.schedule.peak_lr},
                    {"warmup", c.schedule.warmup_fraction},
                    {"decay", c.schedule.decay_fraction}}},
      {"adamw", {{"beta1", c.adamw.beta1}, {"beta2", c.adamw.beta2}, {"eps", c.adamw.eps},
                 {"weight_decay", c.adamw.weight_decay}, {"grad_clip", c.adamw.grad_clip}}},
      {"tokens_per_step", c.tokens_per_step()},
  };
}

}  // namespace quest
