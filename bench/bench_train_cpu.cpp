// CPU training throughput of the reference backend (issue 2): the default job's model
// (TrainConfig{}.model), random tokens, full optimizer steps (zero_grads, forward_backward, AdamW,
// prepare_weights), and where the time goes, per op.
//
//   bench_train_cpu [--preset NAME] [--layers L] [--d-model D] [--head-dim HD] [--seq-len T]
//                   [--batch B] [--steps 5] [--warmup 2] [--threads 0] [--seed 0] [--no-profile]
//                   [--cpu-clock]
//
// Without options: the default job's model and batch. --layers / --d-model / --head-dim override
// the preset's shape (the hidden width follows d_model).
//
// --cpu-clock times the ops (and the table's percentages) in process CPU time instead of wall
// time: on a machine shared with other work, CPU time with --threads 1 does not depend on the
// other work (wall time does). Step CPU time is printed either way.
//
// A plain main(): when Google Benchmark is linked, its main is not.
#include <omp.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fmt/format.h>
#include <fstream>
#include <numeric>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "model/llama.h"
#include "ops/op_profile.h"
#include "train/adamw.h"
#include "train/train_config.h"

extern "C" void openblas_set_num_threads(int);
extern "C" int openblas_get_num_threads(void);
extern "C" char* openblas_get_corename(void);

namespace {

struct Options {
  std::string preset;  // empty: the default job's model
  int64_t layers = 0, d_model = 0, head_dim = 0;  // 0: the preset's
  int64_t seq_len = 0;  // 0: the model config's
  int64_t batch = 0;    // 0: the default job's
  int64_t steps = 5;
  int64_t warmup = 2;
  int threads = 0;      // 0: all cores
  uint64_t seed = 0;
  bool profile = true;
  bool cpu_clock = false;
};

[[noreturn]] void usage(const char* msg) {
  std::fprintf(stderr,
               "%s\nusage: bench_train_cpu [--preset NAME] [--layers L] [--d-model D] [--head-dim HD] "
               "[--seq-len T] [--batch B] [--steps N] [--warmup N] [--threads N] [--seed S] "
               "[--no-profile] [--cpu-clock]\n",
               msg);
  std::exit(2);
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--no-profile") {
      o.profile = false;
      continue;
    }
    if (a == "--cpu-clock") {
      o.cpu_clock = true;
      continue;
    }
    if (a == "-h" || a == "--help") usage("CPU training benchmark");
    if (i + 1 >= argc) usage(("missing value for " + a).c_str());
    const char* v = argv[++i];
    char* end = nullptr;
    const long long n = std::strtoll(v, &end, 10);
    const bool is_int = end && *end == '\0' && end != v;
    auto need_int = [&](long long lo) {
      if (!is_int || n < lo) usage(("bad value for " + a + ": " + v).c_str());
      return n;
    };
    if (a == "--preset") o.preset = v;
    else if (a == "--layers") o.layers = need_int(1);
    else if (a == "--d-model") o.d_model = need_int(1);
    else if (a == "--head-dim") o.head_dim = need_int(2);
    else if (a == "--seq-len") o.seq_len = need_int(1);
    else if (a == "--batch") o.batch = need_int(1);
    else if (a == "--steps") o.steps = need_int(1);
    else if (a == "--warmup") o.warmup = need_int(0);
    else if (a == "--threads") o.threads = int(need_int(0));
    else if (a == "--seed") o.seed = uint64_t(need_int(0));
    else usage(("unknown option " + a).c_str());
  }
  return o;
}

// CPU seconds of the whole process (every thread).
double cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

std::string cpu_model() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  return "unknown CPU";
}

// The linear layers of one block with this (in, out) shape, for labelling the product rows.
std::string linear_names(const quest::ModelConfig& c, int64_t K, int64_t M) {
  const int64_t d = c.d_model, H = c.hidden_dim();
  std::string names;
  auto add = [&](bool match, const char* n) {
    if (match) names += (names.empty() ? "" : ",") + std::string(n);
  };
  add(K == d && M == 3 * d, "wqkv");
  add(K == d && M == d, "wo");
  add(K == d && M == H, "w1,w2");
  add(K == H && M == d, "w3");
  add(K == d && M == c.padded_vocab(), "lm_head");
  return names;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace quest;
  using clock = std::chrono::steady_clock;
  const Options opt = parse(argc, argv);
  try {
    TrainConfig job;  // the default job
    ModelConfig mc = opt.preset.empty() ? job.model : model_preset(opt.preset);
    if (opt.layers > 0) mc.n_layer = opt.layers;
    if (opt.d_model > 0) mc.d_model = opt.d_model;
    if (opt.head_dim > 0) mc.head_dim = opt.head_dim;
    if (opt.seq_len > 0) mc.seq_len = opt.seq_len;
    const int64_t B = opt.batch > 0 ? opt.batch : job.batch_size, T = mc.seq_len;
    mc.validate();
    if (opt.threads > 0) {
      omp_set_num_threads(opt.threads);
      openblas_set_num_threads(opt.threads);  // products run outside OpenMP regions
    }

    Model model(mc, B);
    model.init_weights(opt.seed);
    std::vector<ParamGroup> groups;  // as the trainer builds them
    for (const auto& t : model.layout()) {
      if (!groups.empty() && groups.back().decay == t.weight_decay() &&
          groups.back().params + groups.back().size == model.param(t)) {
        groups.back().size += t.numel();
      } else {
        groups.push_back({model.param(t), model.grad(t), t.numel(), t.weight_decay()});
      }
    }
    AdamW adamw(job.adamw, std::move(groups));
    const double lr = preset_learning_rate(mc.preset) > 0 ? preset_learning_rate(mc.preset) : 1e-3;

    Rng rng(opt.seed + 1);
    std::vector<int32_t> x(B * T), y(B * T);
    for (int64_t i = 0; i < B * T; ++i) {
      x[i] = int32_t(rng.below(uint64_t(mc.vocab_size)));
      y[i] = int32_t(rng.below(uint64_t(mc.vocab_size)));
    }

    // FLOPs per token: 6 per weight of the matrix products (forward 2, backward 4; lm_head over
    // the padded vocabulary, as computed), plus causal attention: q.k and p.v cost 2*d*(t+1) each
    // at position t in the forward, twice that in the backward, i.e. 6*L*d*(T+1) on average.
    const int64_t L = mc.n_layer, d = mc.d_model, H = mc.hidden_dim(), Vp = mc.padded_vocab();
    const double block_params = double(L) * double(3 * d * d + d * d + 3 * d * H);
    const double head_params = double(d) * double(Vp);
    const double flops_matmul = 6.0 * (block_params + head_params);
    const double flops_attn = 6.0 * double(L) * double(d) * double(T + 1);
    const double flops_token = flops_matmul + flops_attn;
    const int64_t n_params = int64_t(model.params().size());

    auto env = [](const char* name) {
      const char* v = std::getenv(name);
      return std::string(v ? v : "unset");
    };
    fmt::print("bench_train_cpu: CPU {}, {} OpenMP threads, {} OpenBLAS threads (kernels: {})\n",
               cpu_model(), omp_get_max_threads(), openblas_get_num_threads(),
               openblas_get_corename());
    fmt::print("environment: OMP_WAIT_POLICY={} OPENBLAS_CORETYPE={}\n", env("OMP_WAIT_POLICY"),
               env("OPENBLAS_CORETYPE"));
    fmt::print(
        "model: preset {}, {} layers, d {}, head_dim {} ({} heads), hidden {}, vocab {} (padded "
        "{}), seq_len {}, batch {}: {} tokens/step\n",
        mc.preset, L, d, mc.head_dim, mc.n_head(), H, mc.vocab_size, Vp, T, B, B * T);
    fmt::print("parameters: {:.2f}M total, {:.2f}M non-embedding\n", n_params / 1e6,
               mc.non_embedding_params() / 1e6);
    fmt::print(
        "model FLOPs/token: {:.1f}M = 6 x {:.2f}M matmul weights ({:.2f}M in blocks, {:.2f}M "
        "lm_head) + {:.1f}M causal attention\n",
        flops_token / 1e6, (block_params + head_params) / 1e6, block_params / 1e6,
        head_params / 1e6, flops_attn / 1e6);

    const float grad_scale = 1.0f / float(B * T);
    double loss = 0.0;
    auto step = [&] {
      {
        QUEST_OP_PROFILE("[train] zero_grads");
        model.zero_grads();
      }
      loss = model.forward_backward(x.data(), y.data(), B, T, grad_scale) / double(B * T);
      {
        QUEST_OP_PROFILE("[train] adamw_step");
        adamw.step(lr);
      }
      {
        QUEST_OP_PROFILE("[train] prepare_weights");
        model.prepare_weights();
      }
    };

    for (int64_t i = 0; i < opt.warmup; ++i) {
      const auto t0 = clock::now();
      step();
      fmt::print("warm-up step {}: {:.0f} ms, loss {:.4f}\n", i + 1,
                 std::chrono::duration<double, std::milli>(clock::now() - t0).count(), loss);
    }

    op_profile_reset();
    set_op_profile_clock(opt.cpu_clock ? OpProfileClock::ProcessCpu : OpProfileClock::Wall);
    set_op_profile_enabled(opt.profile);
    std::vector<double> cpu_ms;
    std::vector<double> ms;
    for (int64_t i = 0; i < opt.steps; ++i) {
      const auto t0 = clock::now();
      const double c0 = cpu_seconds();
      step();
      ms.push_back(std::chrono::duration<double, std::milli>(clock::now() - t0).count());
      cpu_ms.push_back((cpu_seconds() - c0) * 1e3);
      fmt::print("step {}: {:.0f} ms, {:.0f} ms CPU, loss {:.4f}\n", i + 1, ms.back(), cpu_ms.back(),
                 loss);
    }
    set_op_profile_enabled(false);

    const double total_ms = std::accumulate(ms.begin(), ms.end(), 0.0);
    const double mean_ms = total_ms / double(ms.size());
    std::vector<double> sorted = ms;
    std::sort(sorted.begin(), sorted.end());
    const double median_ms = sorted[sorted.size() / 2];
    const double tokens = double(B * T);
    fmt::print("\n== {} timed steps ({} warm-up) ==\n", opt.steps, opt.warmup);
    fmt::print("ms/step: mean {:.1f}, median {:.1f}, min {:.1f}, max {:.1f}\n", mean_ms, median_ms,
               sorted.front(), sorted.back());
    fmt::print("tokens/s: {:.0f} (mean), {:.0f} (best step)\n", tokens / (mean_ms / 1e3),
               tokens / (sorted.front() / 1e3));
    fmt::print("achieved: {:.1f} GFLOP/s (mean), {:.1f} GFLOP/s (best step)\n",
               flops_token * tokens / (mean_ms / 1e3) / 1e9,
               flops_token * tokens / (sorted.front() / 1e3) / 1e9);
    const double total_cpu_ms = std::accumulate(cpu_ms.begin(), cpu_ms.end(), 0.0);
    const double min_cpu_ms = *std::min_element(cpu_ms.begin(), cpu_ms.end());
    fmt::print(
        "CPU time/step (all threads, spin-waits included): mean {:.1f} ms, min {:.1f} ms; "
        "{:.0f} tokens per CPU-second (best step)\n",
        total_cpu_ms / double(cpu_ms.size()), min_cpu_ms, tokens / (min_cpu_ms / 1e3));

    if (!opt.profile) return 0;
    const double total_s = (opt.cpu_clock ? total_cpu_ms : total_ms) / 1e3;
    if (opt.cpu_clock) fmt::print("\n(op times below are process CPU time)\n");
    auto by_op = op_profile_by_op();
    double profiled = 0.0;
    for (const auto& e : by_op) profiled += e.seconds;
    OpProfileEntry rest{"(unprofiled: residual adds, model glue)", 0, 0, opt.steps,
                        std::max(0.0, total_s - profiled)};
    by_op.push_back(rest);
    fmt::print("\nper-op time over the timed steps (% of the steps' {} time):\n{}",
               opt.cpu_clock ? "CPU" : "wall",
               op_profile_table(by_op, total_s, opt.steps));

    double mm = 0.0, mm_head = 0.0, mm_fwd = 0.0;
    std::vector<OpProfileEntry> products;
    for (const auto& e : op_profile_entries()) {
      if (e.op.rfind("matmul", 0) != 0) continue;
      mm += e.seconds;
      if (e.op == "matmul_forward") mm_fwd += e.seconds;
      if (e.a == d && e.b == Vp) mm_head += e.seconds;
      OpProfileEntry named = e;
      named.op += " " + linear_names(mc, e.a, e.b);
      products.push_back(named);
    }
    fmt::print("\nmatrix products of the linear layers and the lm_head, by shape [in x out] (attention's "
               "own products are part of the attention rows above):\n{}",
               op_profile_table(products, total_s, opt.steps));
    fmt::print(
        "\nmatrix products (forward + backward, lm_head included): {:.1f}% of the step "
        "({:.1f}% forward, {:.1f}% backward; lm_head alone {:.1f}%)\n",
        100 * mm / total_s, 100 * mm_fwd / total_s, 100 * (mm - mm_fwd) / total_s,
        100 * mm_head / total_s);
    fmt::print("matrix products: {:.1f} GFLOP per {} second; everything else takes {:.1f}% of the step\n",
               flops_matmul * tokens * opt.steps / mm / 1e9, opt.cpu_clock ? "CPU" : "wall",
               100 * (1 - mm / total_s));
  } catch (const Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
