#include "train/trainer.h"

#include <chrono>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "core/error.h"
#include "core/log.h"
#include "core/file_io.h"
#include "dist/agree.h"
#include "dist/single_communicator.h"
#include "train/checkpoint.h"
#include "train/cpu_engine.h"
#include "train/model_io.h"
#include "train/schedule.h"

namespace quest {

namespace fs = std::filesystem;

Trainer::Trainer(const TrainConfig& config, Communicator* comm) : cfg_(config), comm_(comm) {
  if (!comm_) {
    own_comm_ = std::make_unique<SingleCommunicator>();
    comm_ = own_comm_.get();
  }
  cfg_.validate();
  const int world = comm_->size();
  QUEST_CHECK(cfg_.batch_size % world == 0,
              "the batch size {} is not divisible by the world size {}: each of the {} ranks takes an "
              "equal share of every micro-batch (use a batch size that is a multiple of {})",
              cfg_.batch_size, world, world, world);
  local_batch_ = cfg_.batch_size / world;
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
  check_same_config();

  // Read once: the checkpoint gives the model's shape here and its state after the engine exists.
  // In a job, rank 0 reads the file and sends its bytes to the others.
  std::optional<Checkpoint> ck;
  if (!cfg_.resume.empty()) {
    std::vector<char> bytes;
    if (writer()) {
      QUEST_CHECK(file_exists(cfg_.resume), "checkpoint '{}' does not exist", cfg_.resume);
      bytes = read_file(cfg_.resume);
    }
    ck = parse_checkpoint(broadcast_bytes(*comm_, std::move(bytes)), cfg_.resume);
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
  EngineOptions options;
  options.local_rank = comm_->local_rank();
  options.lowbit_product = cfg_.lowbit_product;
  engine_ = make_engine(cfg_.device, cfg_.model, cfg_.quant, cfg_.adamw, local_batch_, options);
  engine_->set_communicator(*comm_);
  engine_->set_micro_batches(cfg_.grad_accum);
  engine_->init_weights(cfg_.seed);  // the same seed on every rank: the same weights
  if (ck) resume_from(*ck, cfg_.resume);

  if (!writer()) return;
  fs::create_directories(cfg_.out_dir);
  log_.open(fs::path(cfg_.out_dir) / "log.jsonl", cfg_.resume.empty() ? std::ios::trunc : std::ios::app);
  QUEST_CHECK(log_, "cannot write the log in '{}'", cfg_.out_dir);
  nlohmann::json config_json = cfg_;
  config_json["world_size"] = world;
  std::ofstream(fs::path(cfg_.out_dir) / "config.json") << config_json.dump(2) << "\n";
}

void Trainer::check_same_config() {
  // What every rank must agree on: the training config (not where each one finds the data or
  // writes), the data's size, and whether it resumes. Checked before any other collective, so a
  // mismatch is an error rather than ranks waiting on different calls.
  nlohmann::json j = cfg_;
  j.erase("data");
  j["train_tokens"] = train_->size();
  j["resume"] = !cfg_.resume.empty();
  require_same_on_all_ranks(*comm_, j.dump(), "training config");
}

void Trainer::next_micro_batch(int32_t* x, int32_t* y) {
  const uint64_t b = uint64_t(local_batch_), r = uint64_t(comm_->rank()), R = uint64_t(comm_->size());
  sampler_->skip(r * b);
  sampler_->next_batch(local_batch_, x, y);
  sampler_->skip((R - 1 - r) * b);
}

Trainer::~Trainer() = default;

void Trainer::log_record(const nlohmann::json& record) {
  if (!writer()) return;
  log_ << record.dump() << "\n";
  log_.flush();
}

EvalResult Trainer::evaluate() {
  if (!val_) return {};
  return evaluate_split(
      [this](const int32_t* x, const int32_t* y, int64_t B, int64_t T) { return engine_->forward_loss(x, y, B, T); },
      cfg_.model.seq_len, *val_, local_batch_, cfg_.eval_windows, comm_);
}

Model& Trainer::model() {
  auto* cpu = dynamic_cast<CpuEngine*>(engine_.get());
  QUEST_CHECK(cpu != nullptr, "the trainer runs on {}, not on the CPU", engine_->device());
  return cpu->model();
}

TrainSummary Trainer::run(int64_t until) {
  const int64_t stop = until < 0 ? cfg_.steps : std::min(until, cfg_.steps);
  // B is the global micro-batch: the gradients summed over the ranks are those of one process.
  const int64_t B = cfg_.batch_size, T = cfg_.model.seq_len, accum = cfg_.grad_accum;
  const float grad_scale = 1.0f / float(B * T * accum);
  std::vector<int32_t> x(local_batch_ * T), y(local_batch_ * T);
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
  if (comm_->size() > 1)
    log_info("data parallel: {} ranks over {}, {} sequences per rank and micro-batch", comm_->size(),
             comm_->backend(), local_batch_);
  while (step_ < stop) {
    const double lr = learning_rate(cfg_.schedule, step_, cfg_.steps);
    engine_->zero_grads();
    double loss_sum = 0.0;
    for (int64_t m = 0; m < accum; ++m) {
      next_micro_batch(x.data(), y.data());
      loss_sum += engine_->forward_backward(x.data(), y.data(), local_batch_, T, grad_scale);
    }
    comm_->all_reduce_sum(&loss_sum, 1);  // every rank checks and reports the same loss
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
  header["world_size"] = comm_->size();  // for information: it resumes on any number of ranks
  const std::vector<StateArray> state = engine_->state();  // collective
  if (!writer()) return;
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
  if (const int64_t saved = h.at("train").value("tokens_per_step", cfg_.tokens_per_step());
      saved != cfg_.tokens_per_step())
    log_warning("checkpoint '{}' was trained with {} tokens per step, this run takes {}: the data "
                "continues from the same position, but the steps differ from the original run's",
                path, saved, cfg_.tokens_per_step());
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
