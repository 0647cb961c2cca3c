#pragma once
// The training run: data, model, optimizer, schedule, evaluation, logging and checkpoints.
// Resuming from a checkpoint continues exactly: N steps + resume + N steps gives the same weights,
// bit for bit, as 2N steps straight (same machine and thread count).
//
// Data parallel: with a communicator of R ranks, every rank runs a Trainer with the same config.
// batch_size stays the global micro-batch; rank r takes rows [r*B/R, (r+1)*B/R) of each one (R
// must divide B), so the windows a step sees depend on the global batch only, and a checkpoint
// resumes on any number of ranks. Rank 0 alone writes the log, config.json and checkpoints.
#include <cstdint>
#include <fstream>
#include <memory>
#include <optional>
#include <string>

#include "data/sampler.h"
#include "data/token_dataset.h"
#include "dist/communicator.h"
#include "model/llama.h"
#include "train/evaluate.h"
#include "train/mask_stats.h"
#include "train/adamw.h"
#include "train/engine.h"
#include "train/checkpoint.h"
#include "train/train_config.h"

namespace quest {

struct TrainSummary {
  int64_t steps = 0;
  double train_loss = 0;  // the last step's
  EvalResult eval;        // the final validation
  double seconds = 0, tokens_per_second = 0;
};

class Trainer {
 public:
  // comm: the ranks of a data-parallel job (null: this process alone). It must outlive the trainer.
  explicit Trainer(const TrainConfig& config, Communicator* comm = nullptr);
  ~Trainer();

  // Trains up to step `until` (default: the configured number of steps).
  TrainSummary run(int64_t until = -1);
  EvalResult evaluate();  // collective: each rank takes a share of the validation windows
  // Collective (the optimizer state is gathered from the ranks); rank 0 writes the file.
  void save_checkpoint(const std::string& path) const;

  // The model of a CPU run (throws for another device); params() works on every device.
  Model& model();
  std::vector<float> params() { return engine_->params(); }
  Engine& engine() { return *engine_; }
  const TrainConfig& config() const { return cfg_; }  // with the data's vocabulary applied
  int64_t step() const { return step_; }
  const TokenDataset& train_data() const { return *train_; }
  const std::optional<TokenDataset>& val_data() const { return val_; }

 private:
  void resume_from(const Checkpoint& ck, const std::string& path);
  void log_record(const nlohmann::json& record);
  void check_same_config();
  // Reads this rank's rows of the next global micro-batch into x, y.
  void next_micro_batch(int32_t* x, int32_t* y);
  bool writer() const { return comm_->rank() == 0; }

  TrainConfig cfg_;
  std::unique_ptr<Communicator> own_comm_;  // when no communicator is given
  Communicator* comm_;
  int64_t local_batch_;  // rows of each micro-batch on this rank
  std::unique_ptr<TokenDataset> train_;
  std::optional<TokenDataset> val_;
  std::unique_ptr<WindowSampler> sampler_;
  std::unique_ptr<Engine> engine_;
  int64_t step_ = 0;
  std::ofstream log_;
};

// Entropy (nats per token) of the unigram distribution of the first max_tokens tokens: the loss
// of a model that ignores context, a yardstick a trained model must beat.
double unigram_entropy(const TokenDataset& data, uint64_t max_tokens = 50'000'000);

}  // namespace quest
