#include "train/trainer.h"

#include <chrono>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "core/error.h"
#include "core/log.h"
#include "train/checkpoint.h"
#include "train/cpu_engine.h"
#include "train/model_io.h"
#include "train/schedule.h"

namespace quest {

namespace fs = std::filesystem;

Trainer::Trainer(const TrainConfig& config) : cfg_(config) {
  cfg_.validate();
  QUEST_CHECK(!cfg_.data.empty(), "train: no data directory given");
  train_ = std::make_unique<TokenDataset>(TokenDataset::open(cfg_.data, cfg_.train_split));
  try {
    val_.emplace(TokenDataset::open(cfg_.data, cfg_.val_split));
  } catch (const Error& e) {
    log_warning("no validation split ({}): training without validation", e.what());
  }
  if (const auto& meta = train_->meta(); meta && meta->vocab_size) {
    cfg_.model.vocab_size = *meta->vocab_size;  // the model follows the data's tokenizer
  }

  // Read once: the checkpoint gives the model's shape here and its state after the engine exists.
  std::optional<Checkpoint> ck;
  if (!cfg_.resume.empty()) {
    ck = quest::load_checkpoint(cfg_.resume);
    cfg_.model = ck->header.at("model").get<ModelConfig>();
    const auto trained = ck->header.at("quant").get<QuantConfig>();
    if (!trained.same_quantization(cfg_.quant)) {
      QUEST_CHECK(cfg_.allow_quant_change,
                  "checkpoint '{}' was trained with quantization '{}' but this run asks for '{}' ({}); "
                  "pass the same quantization options, or --allow-quant-change to switch on purpose",
                  cfg_.resume, trained.to_string(), cfg_.quant.to_string(), trained.difference(cfg_.quant));
      log_warning("switching quantization from '{}' to '{}'", trained.to_string(), cfg_.quant.to_string());
    }
  }
  sampler_ = std::make_unique<WindowSampler>(*train_, cfg_.model.seq_len, cfg_.seed);
  engine_ = make_engine(cfg_.device, cfg_.model, cfg_.quant, cfg_.adamw, cfg_.batch_size);
  engine_->init_weights(cfg_.seed);
  if (ck) resume_from(*ck, cfg_.resume);

  fs::create_directories(cfg_.out_dir);
  log_.open(fs::path(cfg_.out_dir) / "log.jsonl", cfg_.resume.empty() ? std::ios::trunc : std::ios::app);
  QUEST_CHECK(log_, "cannot write the log in '{}'", cfg_.out_dir);
  nlohmann::json config_json = cfg_;
  std::ofstream(fs::path(cfg_.out_dir) / "config.json") << config_json.dump(2) << "\n";
}

Trainer::~Trainer() = default;

void Trainer::log_record(const nlohmann::json& record) {
  log_ << record.dump() << "\n";
  log_.flush();
}

EvalResult Trainer::evaluate() {
  if (!val_) return {};
  return evaluate_split(
      [this](const int32_t* x, const int32_t* y, int64_t B, int64_t T) { return engine_->forward_loss(x, y, B, T); },
      cfg_.model.seq_len, *val_, cfg_.batch_size, cfg_.eval_windows);
}

Model& Trainer::model() {
  auto* cpu = dynamic_cast<CpuEngine*>(engine_.get());
  QUEST_CHECK(cpu != nullptr, "the trainer runs on {}, not on the CPU", engine_->device());
  return cpu->model();
}

TrainSummary Trainer::run(int64_t until) {
  const int64_t stop = until < 0 ? cfg_.steps : std::min(until, cfg_.steps);
  const int64_t B = cfg_.batch_size, T = cfg_.model.seq_len, accum = cfg_.grad_accum;
  const float grad_scale = 1.0f / float(B * T * accum);
  std::vector<int32_t> x(B * T), y(B * T);
  TrainSummary summary;
  using clock = std::chrono::steady_clock;
  const auto start = clock::now();
  auto window_start = start;
  const int64_t first_step = step_;
  int64_t window_tokens = 0;

  log_info("training {} ({:.2f}M non-embedding parameters, {} layers, d {}) on {} tokens, {} steps of {} tokens",
           cfg_.model.preset, cfg_.model.non_embedding_params() / 1e6, cfg_.model.n_layer,
           cfg_.model.d_model, train_->size(), cfg_.steps, cfg_.tokens_per_step());
  log_info("quantization: {}", cfg_.quant.describe());
  while (step_ < stop) {
    const double lr = learning_rate(cfg_.schedule, step_, cfg_.steps);
    engine_->zero_grads();
    double loss_sum = 0.0;
    for (int64_t m = 0; m < accum; ++m) {
      sampler_->next_batch(B, x.data(), y.data());
      loss_sum += engine_->forward_backward(x.data(), y.data(), B, T, grad_scale);
    }
    const double loss = loss_sum / double(B * T * accum);
    QUEST_CHECK(std::isfinite(loss), "the training loss is not finite at step {}: training diverged", step_);
    const double gnorm = engine_->step(lr);
    ++step_;
    window_tokens += B * T * accum;
    summary.train_loss = loss;

    const bool last = step_ == cfg_.steps;
    if (step_ % cfg_.log_every == 0 || last) {
      const auto now = clock::now();
      const double window_s = std::chrono::duration<double>(now - window_start).count();
      const double elapsed = std::chrono::duration<double>(now - start).count();
      const double tps = window_tokens / std::max(window_s, 1e-9);
      const double eta = elapsed / double(step_ - first_step) * double(cfg_.steps - step_);
      log_progress("step {:>5}/{} | loss {:.4f} | lr {:.2e} | grad norm {:.3f} | {:.0f} tok/s | ETA {}",
                   step_, cfg_.steps, loss, lr, gnorm, tps, format_duration(eta));
      log_record({{"type", "train"}, {"step", step_}, {"loss", loss}, {"lr", lr}, {"grad_norm", gnorm},
                  {"tokens", step_ * cfg_.tokens_per_step()}, {"tokens_per_s", tps}, {"elapsed_s", elapsed}});
      window_start = now;
      window_tokens = 0;
    }
    if ((cfg_.eval_every > 0 && step_ % cfg_.eval_every == 0) || last) {
      // Masks of this step's weights and of the last training micro-batch's inputs.
      if (nlohmann::json masks = engine_->mask_statistics(); !masks.is_null()) {
        log_info("step {:>5}/{} | masked: weights {:.3f}%, inputs {:.3f}%{}", step_, cfg_.steps,
                 100 * masks["mean_w_masked"].get<double>(), 100 * masks["mean_x_masked"].get<double>(),
                 masks.contains("mean_w_persistence")
                     ? fmt::format(", weight-mask persistence {:.1f}%", 100 * masks["mean_w_persistence"].get<double>())
                     : "");
        masks["type"] = "masks";
        masks["step"] = step_;
        log_record(masks);
      }
      const EvalResult e = evaluate();
      if (e.windows > 0) {
        log_info("step {:>5}/{} | val loss {:.4f} | ppl {:.2f}{}", step_, cfg_.steps, e.loss, e.perplexity,
                 e.bits_per_byte ? fmt::format(" | {:.4f} bits/byte", *e.bits_per_byte) : "");
        nlohmann::json rec = {{"type", "eval"}, {"step", step_}, {"val_loss", e.loss},
                              {"val_ppl", e.perplexity}, {"val_windows", e.windows}};
        if (e.bits_per_byte) rec["val_bpb"] = *e.bits_per_byte;
        log_record(rec);
      }
      summary.eval = e;
    }
    if ((cfg_.checkpoint_every > 0 && step_ % cfg_.checkpoint_every == 0) || last)
      save_checkpoint((fs::path(cfg_.out_dir) / "checkpoint.bin").string());
  }
  summary.steps = step_;
  summary.seconds = std::chrono::duration<double>(clock::now() - start).count();
  summary.tokens_per_second = double((step_ - first_step) * cfg_.tokens_per_step()) / std::max(summary.seconds, 1e-9);
  return summary;
}

void Trainer::save_checkpoint(const std::string& path) const {
  const auto s = sampler_->state();
  nlohmann::json header = {
      {"format", "quest-checkpoint"},
      {"model", cfg_.model},
      {"quant", cfg_.quant},
      {"train", cfg_},
      {"step", step_},
      {"adam_step", engine_->adam_steps()},
      {"device", engine_->device()},
      {"sampler", {{"epoch", s.epoch}, {"index", s.index}, {"seed", cfg_.seed}}},
      {"data_tokens", train_->size()},
  };
  if (const auto& m = train_->meta(); m && m->tokenizer) header["tokenizer"] = *m->tokenizer;
  const std::vector<StateArray> state = engine_->state();
  std::vector<CheckpointArray> arrays;
  for (const auto& a : state) arrays.push_back({a.name, a.data.data(), int64_t(a.data.size())});
  quest::save_checkpoint(path, header, arrays);
}

void Trainer::resume_from(const Checkpoint& ck, const std::string& path) {
  const auto& h = ck.header;
  step_ = h.at("step").get<int64_t>();
  QUEST_CHECK(h.at("data_tokens").get<uint64_t>() == train_->size(),
              "checkpoint '{}' was trained on {} tokens, this data has {}: not the same data", path,
              h.at("data_tokens").get<uint64_t>(), train_->size());
  QUEST_CHECK(h.at("sampler").at("seed").get<uint64_t>() == cfg_.seed,
              "checkpoint '{}' used seed {}, this run seed {}", path,
              h.at("sampler").at("seed").get<uint64_t>(), cfg_.seed);
  QUEST_CHECK(step_ <= cfg_.steps, "checkpoint '{}' is at step {}, beyond the run's {} steps", path,
              step_, cfg_.steps);
  engine_->restore(ck, h.at("quant").get<QuantConfig>().same_quantization(cfg_.quant));
  sampler_->restore({h.at("sampler").at("epoch").get<uint64_t>(), h.at("sampler").at("index").get<uint64_t>()});
  log_info("resumed from '{}' at step {} on {}", path, step_, engine_->device());
}

double unigram_entropy(const TokenDataset& data, uint64_t max_tokens) {
  const uint64_t n = std::min<uint64_t>(data.size(), max_tokens);
  std::vector<int32_t> tokens(n);
  data.copy(0, n, tokens.data());
  std::unordered_map<int32_t, uint64_t> counts;
  for (int32_t t : tokens) ++counts[t];
  double h = 0.0;
  for (const auto& [t, c] : counts) {
    const double p = double(c) / double(n);
    h -= p * std::log(p);
  }
  return h;
}

}  // namespace quest
