// `quest train`: options (defaults < --config file < command line) -> TrainConfig -> Trainer.
#include <cmath>
#include <filesystem>

#include "cli/commands.h"
#include "cli/job.h"
#include "cli/paths.h"
#include "cli/quant_options.h"
#include "cli/sample_text.h"
#include "core/error.h"
#include "core/log.h"
#include "dist/agree.h"
#include "train/trainer.h"

namespace quest::cli {

namespace {

struct TrainOptions {
  TrainConfig cfg;
  std::string preset = "tiny", schedule = "onecycle";
  int64_t n_layer = 0, d_model = 0, head_dim = 0, hidden = 0, seq_len = 0;
  double lr = 0;
  QuantOptions quant;
  int64_t stop_at = 0;         // 0: train to the last step
  double dist_timeout = 300;   // seconds a rank waits for its peers
};

void train(TrainOptions& o, Communicator& comm) {
  TrainConfig& cfg = o.cfg;
  cfg.model = model_preset(o.preset);
  if (o.n_layer) cfg.model.n_layer = o.n_layer;
  if (o.d_model) cfg.model.d_model = o.d_model;
  if (o.head_dim) cfg.model.head_dim = o.head_dim;
  if (o.hidden) cfg.model.hidden = o.hidden;
  if (o.seq_len) cfg.model.seq_len = o.seq_len;
  if (o.n_layer || o.d_model || o.head_dim || o.hidden) cfg.model.preset = "custom";
  cfg.quant = o.quant.config();
  cfg.schedule.kind = parse_schedule_kind(o.schedule);
  cfg.schedule.peak_lr = o.lr > 0 ? o.lr : preset_learning_rate(o.preset);
  if (cfg.schedule.peak_lr <= 0) cfg.schedule.peak_lr = 1e-3;
  const bool default_job = cfg.data.empty();
  if (default_job) cfg.data = default_data_dir();
  cfg.validate();
  QUEST_CHECK(std::filesystem::is_directory(cfg.data) || std::filesystem::exists(cfg.data),
              "data '{}' does not exist (prepare a corpus with `quest prepare`)", cfg.data);

  // Ranks stopping at different steps would wait on different calls.
  require_same_on_all_ranks(comm, std::to_string(o.stop_at), "--stop-at");
  Trainer trainer(cfg, &comm);
  const TrainSummary s = trainer.run(o.stop_at > 0 ? o.stop_at : -1);
  const bool saved = s.steps == cfg.steps || (cfg.checkpoint_every > 0 && s.steps % cfg.checkpoint_every == 0);
  if (!saved) trainer.save_checkpoint((std::filesystem::path(cfg.out_dir) / "checkpoint.bin").string());
  log_info("done: {} steps in {}, {:.0f} tokens/s; checkpoint {}/checkpoint.bin", s.steps,
           format_duration(s.seconds), s.tokens_per_second, cfg.out_dir);
  if (s.eval.windows > 0) {
    const double h = unigram_entropy(trainer.train_data());
    log_info("final validation loss {:.4f} nats/token (unigram entropy of the corpus: {:.4f}){}",
             s.eval.loss, h,
             s.eval.bits_per_byte ? fmt::format(", {:.4f} bits/byte", *s.eval.bits_per_byte) : "");
  }
  if (cfg.sample_tokens > 0 && comm.rank() == 0) {
    SampleOptions opt;
    opt.max_new_tokens = cfg.sample_tokens;
    opt.seed = cfg.seed;
    const auto& meta = trainer.train_data().meta();
    if (meta && meta->tokenizer) {
      // Sampling runs on the CPU, from the trained weights of whichever device trained them.
      Model model(trainer.config().model, 1, quantized_linear_factory(cfg.quant));
      const std::vector<float> params = trainer.params();
      std::copy(params.begin(), params.end(), model.params().begin());
      model.prepare_weights();
      print_sample(model, *tokenizer_for(*meta->tokenizer), cfg.sample_prompt, opt);
    }
    else
      log_info("no sample: the data names no tokenizer (no meta.json)");
  }
}

void run_train(TrainOptions& o) {
  const auto comm = join_job(o.dist_timeout);
  run_in_job(*comm, [&] { train(o, *comm); });
}

}  // namespace

void add_train_command(CLI::App& app) {
  auto o = std::make_shared<TrainOptions>();
  TrainConfig& c = o->cfg;
  CLI::App* cmd = app.add_subcommand(
      "train",
      "Train a model. Without options: the tiny model on Moby Dick on the CPU (a few minutes).");
  cmd->set_config("--config", "", "Read options from a TOML/INI file (command-line options win)");
  cmd->add_option("--data", c.data, "Prepared data directory (train-*.bin, val-*.bin, meta.json)");
  cmd->add_option("--preset", o->preset, "Model size preset")
      ->check(CLI::IsMember(model_preset_names()))->capture_default_str();
  cmd->add_option("--n-layer", o->n_layer, "Override the preset's number of layers")->check(CLI::Range(1, 1024));
  cmd->add_option("--d-model", o->d_model, "Override the preset's width")->check(CLI::Range(2, 65536));
  cmd->add_option("--head-dim", o->head_dim, "Attention head width (default 128)")->check(CLI::Range(2, 1024));
  cmd->add_option("--hidden", o->hidden, "SwiGLU width (default 256*ceil(8d/3/256))")->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--seq-len", o->seq_len, "Sequence length (default: the preset's)")->check(CLI::Range(1, 1 << 20));
  add_quant_options(cmd, o->quant);
  cmd->add_flag("--allow-quant-change", c.allow_quant_change,
              "Resume a checkpoint under a different quantization");
  cmd->add_option("--batch-size", c.batch_size, "Sequences per micro-batch")->check(CLI::Range(1, 1 << 20))->capture_default_str();
  cmd->add_option("--grad-accum", c.grad_accum, "Micro-batches per optimizer step")->check(CLI::Range(1, 1 << 20))->capture_default_str();
  cmd->add_option("--steps", c.steps, "Optimizer steps")->check(CLI::Range(int64_t{1}, int64_t{1} << 40))->capture_default_str();
  cmd->add_option("--lr", o->lr, "Peak learning rate (default: the preset's)")->check(CLI::Range(1e-9, 1.0));
  cmd->add_option("--schedule", o->schedule, "onecycle | constant | wsd")
      ->check(CLI::IsMember({"onecycle", "constant", "wsd"}))->capture_default_str();
  cmd->add_option("--warmup", c.schedule.warmup_fraction, "Warmup fraction of the steps")->check(CLI::Range(0.0, 1.0))->capture_default_str();
  cmd->add_option("--decay", c.schedule.decay_fraction, "WSD: decay fraction of the steps")->check(CLI::Range(0.0, 1.0))->capture_default_str();
  cmd->add_option("--weight-decay", c.adamw.weight_decay, "AdamW weight decay (linear weights only)")->check(CLI::Range(0.0, 10.0))->capture_default_str();
  cmd->add_option("--grad-clip", c.adamw.grad_clip, "Global gradient-norm clip (0: none)")->check(CLI::Range(0.0, 1e9))->capture_default_str();
  cmd->add_option("--beta1", c.adamw.beta1, "AdamW beta1")->check(CLI::Range(0.0, 0.999999))->capture_default_str();
  cmd->add_option("--beta2", c.adamw.beta2, "AdamW beta2")->check(CLI::Range(0.0, 0.999999))->capture_default_str();
  cmd->add_option("--seed", c.seed, "Seed of the initialization and the data order")->capture_default_str();
  cmd->add_option("--log-every", c.log_every, "Steps between progress lines")->check(CLI::Range(1, 1 << 30))->capture_default_str();
  cmd->add_option("--eval-every", c.eval_every, "Steps between validations (0: at the end)")->check(CLI::Range(0, 1 << 30))->capture_default_str();
  cmd->add_option("--eval-windows", c.eval_windows, "Validation windows per evaluation (0: all)")->check(CLI::Range(0, 1 << 30))->capture_default_str();
  cmd->add_option("--checkpoint-every", c.checkpoint_every, "Steps between checkpoints (0: at the end)")->check(CLI::Range(0, 1 << 30))->capture_default_str();
  cmd->add_option("--device", c.device, "cpu, cuda, or auto (the GPU when one is present)")
      ->check(CLI::IsMember({"cpu", "cuda", "auto"}))->capture_default_str();
  cmd->add_option("--lowbit-product", c.lowbit_product,
                  "GPU: forward products of quantized layers on int8 tensor cores where the quantizers "
                  "give integer codes (true/false)")->capture_default_str();
  cmd->add_option("--out", c.out_dir, "Run directory (log.jsonl, config.json, checkpoint.bin)")->capture_default_str();
  cmd->add_option("--resume", c.resume, "Continue from this checkpoint")->check(CLI::ExistingFile);
  cmd->add_option("--stop-at", o->stop_at,
                  "Stop after this step with a checkpoint (the schedule still spans --steps)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 40));
  cmd->add_option("--dist-timeout", o->dist_timeout,
                  "Data parallel: seconds a rank waits for the others before the job fails")
      ->check(CLI::Range(0.1, 1e6))->capture_default_str();
  cmd->add_option("--sample-tokens", c.sample_tokens, "Tokens to sample at the end (0: none)")->check(CLI::Range(0, 1 << 20))->capture_default_str();
  cmd->add_option("--prompt", c.sample_prompt, "Prompt of the final sample")->capture_default_str();
  cmd->callback([o] { run_train(*o); });
}

}  // namespace quest::cli
