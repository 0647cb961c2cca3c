// Evaluation on the GPU (`quest eval --device cuda`): the CUDA engine's per-token losses at any
// B <= batch and T <= seq_len (odd, not a multiple of the attention tile) match the CPU's within
// bf16; the log-likelihood scorer over the engine matches the scorer over the CPU model and picks
// the same HellaSwag endings; a packed export loaded into the engine (its codes installed as the
// product weights) computes the checkpoint's validation loss on the GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "cuda_test_util.h"
#include "data/temp_dir.h"
#include "eval/byte_tokenizer.h"
#include "eval/hellaswag.h"
#include "export/export_test_util.h"
#include "export/packed_export.h"
#include "train/engine.h"

namespace quest {
namespace {

using cuda_test::all_close;

// export_test_config (every quantizer fits: d = 128, one Hadamard block) with sequences of two
// attention tiles (64 queries each).
ModelConfig eval_config() {
  ModelConfig c = test::export_test_config();
  c.seq_len = 128;
  return c;
}

std::unique_ptr<Engine> gpu_engine(LoadedModel& m, int64_t batch, bool lowbit_product = true) {
  EngineOptions options;
  options.lowbit_product = lowbit_product;
  auto e = make_engine("cuda", m.model->config(), m.quant, AdamWConfig{}, batch, options);
  e->load_model(*m.model);
  return e;
}

// B x T tokens of a shorter window than the model's.
test::TokenBatch tokens(const ModelConfig& c, int64_t B, int64_t T, uint64_t seed) {
  ModelConfig shorter = c;
  shorter.seq_len = T;
  return test::random_tokens(shorter, B, seed);
}

std::string param_name(const ::testing::TestParamInfo<const char*>& info) {
  std::string n = info.param;
  if (n.empty()) n = "unquantized";
  for (char& ch : n)
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  return n;
}

class CudaEvalLosses : public ::testing::TestWithParam<const char*> {};

// Per-token losses of the GPU (bf16) against the CPU (fp32) on the same weights. The unquantized
// model differs by bf16 rounding only (per token within 0.03, means within 2e-3). With 4-bit
// quantizers bf16 activations also move entries across grid (and trust-mask) boundaries, and this
// small model's sharp predictions amplify that: on the H100 (2026-11-23) single tokens moved by up
// to 0.54 nats and the sums by up to 0.36% (QuEST) and 0.21% (LSQ). The bounds, 1 nat per token
// and 1% on the sums, leave room for that and still catch a wrong weight, step or mask, which
// moves losses by whole nats.
TEST_P(CudaEvalLosses, PerTokenLossesMatchTheCpu) {
  QUEST_REQUIRE_CUDA();
  const ModelConfig c = eval_config();
  LoadedModel m = test::make_test_model(GetParam(), 4, 1, c);
  test::token_losses(*m.model, test::random_tokens(c, 4, 9));  // initializes LSQ's input steps
  auto engine = gpu_engine(m, 4);
  const bool quantized = !std::string(GetParam()).empty();
  const double atol = quantized ? 1.0 : 0.03, sum_rtol = quantized ? 1e-2 : 2e-3;
  for (const auto& [B, T] : {std::pair<int64_t, int64_t>{3, 77}, {4, 128}, {2, 65}, {1, 1}}) {
    const auto b = tokens(c, B, T, uint64_t(B * 1000 + T));
    std::vector<float> cpu(size_t(B * T)), gpu(size_t(B * T), NAN);
    const double cpu_sum = m.model->forward_loss(b.x.data(), b.y.data(), B, T, cpu.data());
    const double gpu_sum = engine->forward_loss(b.x.data(), b.y.data(), B, T, gpu.data());
    const std::string what = "B=" + std::to_string(B) + " T=" + std::to_string(T);
    EXPECT_TRUE(all_close(gpu, cpu, atol, 0.0, what));
    double sum = 0;
    for (float l : gpu) sum += l;
    EXPECT_NEAR(gpu_sum, sum, 1e-6 * std::fabs(sum)) << what;
    EXPECT_NEAR(gpu_sum, cpu_sum, sum_rtol * std::fabs(cpu_sum) + (T == 1 ? atol : 0.0)) << what;
  }
}

INSTANTIATE_TEST_SUITE_P(Quant, CudaEvalLosses, ::testing::Values("", "w=quest:4,a=quest:4", "w=lsq:4,a=lsq:4"),
                         param_name);

// ---- the log-likelihood scorer and HellaSwag ----------------------------------------------------

// A byte-level model (vocabulary 256, ByteTokenizer).
ModelConfig byte_config() {
  ModelConfig c = test::export_test_config();
  c.vocab_size = 256;
  c.seq_len = 64;
  return c;
}

// Three items with endings of very different lengths, so that the best ending leads by far more
// than bf16 can move the scores (the test checks that premise on the CPU's scores).
constexpr const char* kThreeItems =
    R"({"ctx": "The whale rose from the sea and the", "endings": ["captain saw it.", "qxzj vvk", "zzzzzz zzzz zz", "j"], "label": 0}
{"ctx": "Call me Ishmael. Some years ago", "endings": ["never mind how long", "xq", "kkkkkkkkkkkkkkkkkkkkkkkk", "0"], "label": 0}
{"ctx": "A", "endings": ["b", "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", "c d e", "!!"], "label": 2}
)";

// True when the best score beats every other by more than the two scores' error bounds.
bool clear_winner(const std::vector<double>& scores, const std::vector<double>& error) {
  const int best = argmax_first(scores);
  for (size_t e = 0; e < scores.size(); ++e)
    if (int(e) != best && scores[size_t(best)] - scores[e] <= error[size_t(best)] + error[e]) return false;
  return true;
}

TEST(CudaEvalScorer, MatchesTheCpuModelAndPicksTheSameEndings) {
  QUEST_REQUIRE_CUDA();
  const ModelConfig c = byte_config();
  LoadedModel m = test::make_test_model("", 4, 3, c);
  auto engine = gpu_engine(m, 4);
  ModelScorer on_cpu(*m.model, 3);
  ModelScorer on_gpu([&](const int32_t* x, const int32_t* y, int64_t B, int64_t T,
                         float* losses) { engine->forward_loss(x, y, B, T, losses); },
                     3, c.seq_len);
  // bf16's effect on one token's log-likelihood, at most: the CPU with bf16-rounded weights moves
  // it by 0.007 at most on these requests; bf16 activations add about as much.
  constexpr double kPerToken = 0.05;

  // Hand-made requests: contexts of 1 to 90 tokens (the longest left-truncated to seq_len + 1),
  // continuations of 1 to 12, so batches of 3 mix lengths and padding.
  Rng rng(5);
  std::vector<LoglikRequest> requests;
  for (int64_t ctx : {1, 5, 17, 33, 63, 64, 90}) {
    for (int64_t cont : {1, 4, 12}) {
      LoglikRequest r;
      for (int64_t i = 0; i < ctx; ++i) r.context.push_back(int32_t(rng.below(256)));
      for (int64_t i = 0; i < cont; ++i) r.continuation.push_back(int32_t(rng.below(256)));
      requests.push_back(std::move(r));
    }
  }
  const auto cpu = on_cpu.score(requests), gpu = on_gpu.score(requests);
  ASSERT_EQ(gpu.size(), cpu.size());
  for (size_t i = 0; i < cpu.size(); ++i)
    EXPECT_NEAR(gpu[i], cpu[i], kPerToken * double(requests[i].continuation.size()))
        << "request " << i << ": context " << requests[i].context.size() << ", continuation "
        << requests[i].continuation.size();

  test::TempDir dir;
  test::ByteTokenizer tok;
  const auto items = read_hellaswag(dir.write("hs.jsonl", kThreeItems));
  HellaswagOptions o;
  o.items_per_call = 2;
  o.progress = false;
  const HellaswagResult a = evaluate_hellaswag(items, tok, on_cpu, o), b = evaluate_hellaswag(items, tok, on_gpu, o);
  ASSERT_EQ(a.scores.size(), 3u);
  ASSERT_EQ(b.scores.size(), 3u);
  for (size_t i = 0; i < items.size(); ++i) {
    std::vector<double> norm, error, norm_error;
    for (size_t e = 0; e < items[i].endings.size(); ++e) {
      const double bytes = double(items[i].endings[e].size());
      norm.push_back(a.scores[i].loglik[e] / bytes);
      error.push_back(kPerToken * (bytes + 1));  // the ending's tokens: a space, then its bytes
      norm_error.push_back(error.back() / bytes);
    }
    // The test's own premise: the CPU's choices lead by more than bf16 could change.
    ASSERT_TRUE(clear_winner(a.scores[i].loglik, error)) << "item " << i;
    ASSERT_TRUE(clear_winner(norm, norm_error)) << "item " << i;
    EXPECT_EQ(b.scores[i].predicted, a.scores[i].predicted) << "item " << i;
    EXPECT_EQ(b.scores[i].predicted_norm, a.scores[i].predicted_norm) << "item " << i;
  }
  EXPECT_EQ(b.correct, a.correct);
  EXPECT_EQ(b.correct_norm, a.correct_norm);
}

// ---- the packed export on the GPU ----------------------------------------------------------------

class CudaEvalExport : public ::testing::TestWithParam<const char*> {};

// The export (f32 float tensors, so only the quantized layers are coded) loaded into the engine
// gives the checkpoint's loss on the GPU: its decoded codes, installed as the product weights, are
// the weights the checkpoint's quantizers produce on the device (both then rounded to bf16), and
// the learned quantizer parameters (LSQ's steps) travel with it. Both with bf16 products: an
// export's product weights carry no integer codes, so the engine multiplies them in bf16
// (CudaLinearOp::set_product_weight), while a checkpoint's layers take the int8 product by default.
TEST_P(CudaEvalExport, GivesTheCheckpointsLoss) {
  QUEST_REQUIRE_CUDA();
  const ModelConfig c = eval_config();
  test::TempDir dir;
  LoadedModel m = test::make_test_model(GetParam(), 4, 2, c);
  test::token_losses(*m.model, test::random_tokens(c, 4, 9));  // LSQ's input steps, as training sets them
  const std::string path = dir / "m.safetensors";
  export_packed(m, path, {FloatFormat::F32, ""});
  LoadedModel r = load_packed(path, 4);
  auto checkpoint = gpu_engine(m, 4, false), exported = gpu_engine(r, 4, false);

  double ck_sum = 0, ex_sum = 0, cpu_sum = 0;
  int64_t n = 0;
  for (uint64_t seed = 20; seed < 23; ++seed) {  // three "validation" batches, the last one short
    const int64_t B = seed == 22 ? 3 : 4;
    const auto b = test::random_tokens(c, B, seed);
    std::vector<float> ck(size_t(B * c.seq_len)), ex(ck.size());
    ck_sum += checkpoint->forward_loss(b.x.data(), b.y.data(), B, c.seq_len, ck.data());
    ex_sum += exported->forward_loss(b.x.data(), b.y.data(), B, c.seq_len, ex.data());
    cpu_sum += r.model->forward_loss(b.x.data(), b.y.data(), B, c.seq_len);
    EXPECT_TRUE(all_close(ex, ck, 2e-3, 0.0, "batch " + std::to_string(seed)));
    n += B * c.seq_len;
  }
  const double ck_loss = ck_sum / double(n), ex_loss = ex_sum / double(n);
  EXPECT_NEAR(ex_loss, ck_loss, 1e-4 * ck_loss) << "checkpoint " << ck_loss << ", export " << ex_loss;
  // And the export on the GPU is the export on the CPU, up to bf16.
  EXPECT_NEAR(ex_loss, cpu_sum / double(n), 2e-3 * ck_loss);
}

INSTANTIATE_TEST_SUITE_P(Quant, CudaEvalExport, ::testing::Values("w=quest:4,a=quest:4", "w=lsq:4,a=lsq:4"),
                         param_name);

}  // namespace
}  // namespace quest
