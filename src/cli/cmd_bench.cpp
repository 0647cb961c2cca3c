// `quest bench`: training throughput of a model on synthetic tokens (no data needed), model FLOPs
// utilization, and with --profile the time of every op over one training step.
//
// FLOPs per token are counted as in PaLM (Chowdhery et al. 2022, appendix B): 6 per parameter of
// every matrix product (the linear layers and the lm_head; the embedding is a lookup) plus
// 12 * n_layer * d_model * seq_len for the attention scores and values (causal masking not
// discounted), forward and backward. Low-bit products count as bf16 ones.
#include <chrono>
#include <cstdio>

#include "cli/commands.h"
#include "cli/quant_options.h"
#include "core/error.h"
#include "core/log.h"
#include "core/rng.h"
#include "ops/op_profile.h"
#include "train/engine.h"

namespace quest::cli {

namespace {

struct BenchOptions {
  std::string preset = "30M", device = "auto";
  int64_t batch = 64, seq_len = 0, steps = 20, warmup = 3;
  double peak_tflops = 0;
  bool profile = false, lowbit_product = true;
  uint64_t seed = 0;
  QuantOptions quant;
};

double flops_per_token(const ModelConfig& c) {
  const int64_t d = c.d_model, H = c.hidden_dim();
  const double linear = double(c.n_layer) * double(3 * d * d + d * d + 3 * d * H);
  const double head = double(c.padded_vocab()) * double(d);
  return 6.0 * (linear + head) + 12.0 * double(c.n_layer) * double(d) * double(c.seq_len);
}

void run_bench(const BenchOptions& o) {
  ModelConfig model = model_preset(o.preset);
  if (o.seq_len) model.seq_len = o.seq_len;
  const QuantConfig quant = o.quant.config();
  AdamWConfig adamw;
  EngineOptions options;
  options.lowbit_product = o.lowbit_product;
  auto engine = make_engine(o.device, model, quant, adamw, o.batch, options);
  engine->init_weights(o.seed);
  const int64_t B = o.batch, T = model.seq_len, tokens = B * T;
  std::vector<int32_t> x(static_cast<size_t>(tokens)), y(static_cast<size_t>(tokens));
  Rng rng(o.seed + 1);
  auto one_step = [&] {
    for (int64_t i = 0; i < tokens; ++i) {
      x[size_t(i)] = int32_t(rng.next_u64() % uint64_t(model.vocab_size));
      y[size_t(i)] = int32_t(rng.next_u64() % uint64_t(model.vocab_size));
    }
    engine->zero_grads();
    engine->forward_backward(x.data(), y.data(), B, T, 1.0f / float(tokens));
    engine->step(1e-4);
  };
  log_info("bench: {} ({}), {} on {}, micro-batch {} x {}", o.preset, quant.describe(), engine->device(),
           o.device, B, T);
  for (int64_t i = 0; i < o.warmup; ++i) one_step();
  engine->synchronize();
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  for (int64_t i = 0; i < o.steps; ++i) one_step();
  engine->synchronize();
  const double seconds = std::chrono::duration<double>(clock::now() - t0).count();
  const double tps = double(tokens) * double(o.steps) / seconds;
  const double fpt = flops_per_token(model);
  const bool gpu = engine->device().rfind("cuda", 0) == 0;
  // H100 SXM dense bf16 peak (the data sheet's 989 TFLOP/s) unless given.
  const double peak = o.peak_tflops > 0 ? o.peak_tflops : (gpu ? 989.4 : 0.0);
  std::printf("%s %s: %.0f tokens/s, %.2f ms/step, %.1f TFLOP/s model FLOPs (%.3g GFLOP/token)%s\n",
              o.preset.c_str(), quant.quantized() ? quant.to_string().c_str() : "bf16", tps,
              1e3 * seconds / double(o.steps), fpt * tps / 1e12, fpt / 1e9,
              peak > 0 ? fmt::format(", MFU {:.1f}% of {:.0f} TFLOP/s", 100 * fpt * tps / 1e12 / peak, peak).c_str()
                       : "");
  nlohmann::json rec = {{"job", "bench"}, {"preset", o.preset}, {"quant", quant.to_string()},
                        {"device", engine->device()}, {"lowbit_product", o.lowbit_product}, {"batch", B}, {"seq_len", T}, {"steps", o.steps},
                        {"tokens_per_s", tps}, {"step_ms", 1e3 * seconds / double(o.steps)},
                        {"flops_per_token", fpt}, {"model_tflops", fpt * tps / 1e12}};
  if (peak > 0) rec["mfu"] = fpt * tps / 1e12 / peak;

  if (o.profile) {  // one more step, every op timed
    op_profile_reset();
    set_op_profile_enabled(true);
    const auto p0 = clock::now();
    one_step();
    engine->synchronize();
    const double step_s = std::chrono::duration<double>(clock::now() - p0).count();
    set_op_profile_enabled(false);
    const auto entries = op_profile_entries();
    double timed = 0;
    for (const auto& e : entries) timed += e.seconds;
    std::printf("\nOne training step, per op (%s time; the step took %.2f ms wall, ops %.2f ms):\n%s",
                gpu ? "device" : "wall", 1e3 * step_s, 1e3 * timed,
                op_profile_table(entries, timed, 1).c_str());
    if (gpu && timed > step_s)  // the CUDA engine's weight stream runs beside the main one
      std::printf("(The ops overlapped: the weights' quantization and gradients ran on a second stream beside "
                  "the others; QUEST_WEIGHT_STREAM=0 gives times that add up to the step.)\n");
    std::printf("\nBy op:\n%s", op_profile_table(op_profile_by_op(), timed, 1).c_str());
    nlohmann::json ops = nlohmann::json::array();
    for (const auto& e : op_profile_by_op()) ops.push_back({{"op", e.op}, {"calls", e.calls}, {"ms", 1e3 * e.seconds}});
    rec["profile_step_ms"] = 1e3 * step_s;
    rec["profile"] = ops;
  }
  std::printf("%s\n", rec.dump().c_str());
}

}  // namespace

void add_bench_command(CLI::App& app) {
  auto o = std::make_shared<BenchOptions>();
  CLI::App* cmd = app.add_subcommand(
      "bench", "Training throughput on synthetic tokens (tokens/s, MFU); --profile times every op of a step");
  cmd->set_config("--config", "", "Read options from a TOML/INI file (command-line options win)");
  cmd->add_option("--preset", o->preset, "Model size preset")
      ->check(CLI::IsMember(model_preset_names()))
      ->capture_default_str();
  add_quant_options(cmd, o->quant);
  cmd->add_option("--device", o->device, "cpu, cuda, or auto")
      ->check(CLI::IsMember({"cpu", "cuda", "auto"}))
      ->capture_default_str();
  cmd->add_option("--batch-size", o->batch, "Sequences per micro-batch")->check(CLI::Range(1, 1 << 20))->capture_default_str();
  cmd->add_option("--seq-len", o->seq_len, "Sequence length (default: the preset's)")->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--steps", o->steps, "Timed optimizer steps")->check(CLI::Range(1, 1 << 20))->capture_default_str();
  cmd->add_option("--warmup", o->warmup, "Untimed steps first")->check(CLI::Range(0, 1 << 20))->capture_default_str();
  cmd->add_option("--peak-tflops", o->peak_tflops, "Peak TFLOP/s for MFU (default: H100 SXM bf16 dense, 989.4)")
      ->check(CLI::Range(0.0, 1e6));
  cmd->add_flag("--profile", o->profile, "Print the time of every op over one more step");
  cmd->add_option("--lowbit-product", o->lowbit_product,
                  "GPU: int8 tensor-core forward products where the quantizers give codes (true/false)")
      ->capture_default_str();
  cmd->add_option("--seed", o->seed, "Seed of the weights and tokens")->capture_default_str();
  cmd->callback([o] { run_bench(*o); });
}

}  // namespace quest::cli
