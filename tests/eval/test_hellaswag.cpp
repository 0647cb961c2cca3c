// HellaSwag: lm-eval's preprocessing, reading JSONL (and .zst), acc / acc_norm on a hand-built
// three-item file with a scorer whose choices are known, and the model's batched scorer against
// an independent computation.
#include <gtest/gtest.h>
#include <zstd.h>

#include <cmath>

#include "core/error.h"
#include "core/log.h"
#include "core/rng.h"
#include "data/temp_dir.h"
#include "eval/byte_tokenizer.h"
#include "eval/hellaswag.h"
#include "train/cpu_engine.h"

namespace quest {
namespace {

// Three items. The stub scorer below charges 1 per token and 5 per 'z': the summed
// log-likelihood prefers short endings without z; dividing by the length prefers long ones.
//   item 0 (label 2): ll " ab" -3, " zzzz" -21, " abcdef" -7, " z" -6 -> acc picks 0 (wrong);
//     per byte -1.5, -5.25, -1.17, -6 -> acc_norm picks 2 (right).
//   item 1 (label "0", the ctx_a/ctx_b form): " a" -2 is best both ways (" zzz " -17, -4.25 a
//     byte) -> both right.
//   item 2 (label 1): " q", " r", " s" tie at -2 (the first wins), " zzzzzz" -31 -> both wrong.
constexpr const char* kThreeItems =
    R"({"ctx": "Roof shingle removal: A man is sitting on a roof. he", "endings": ["ab", "zzzz", "abcdef", "z"], "label": 2}
{"activity_label": "Health", "ctx_a": "How to sleep [title] Stop exercising.", "ctx_b": "DRINK water", "endings": ["a", "zz", " zzz [step] ", "bz"], "label": "0"}

{"ctx": "Cooking:  stir [header] it", "endings": ["q", "zzzzzz", "r", "s"], "label": 1}
)";

class StubScorer final : public LoglikScorer {
 public:
  std::vector<double> score(const std::vector<LoglikRequest>& requests) override {
    std::vector<double> out;
    for (const auto& r : requests) {
      seen.push_back(r);
      double s = 0;
      for (int32_t t : r.continuation) s -= t == 'z' ? 5.0 : 1.0;
      out.push_back(s);
    }
    return out;
  }
  std::vector<LoglikRequest> seen;
};

std::string zstd_compress(const std::string& s) {
  std::string out(ZSTD_compressBound(s.size()), '\0');
  out.resize(ZSTD_compress(out.data(), out.size(), s.data(), s.size(), 3));
  return out;
}

class HellaswagTest : public ::testing::Test {
 protected:
  void SetUp() override { set_log_sink([](LogLevel, std::string_view) {}); }
  void TearDown() override { set_log_sink(nullptr); }
  test::TempDir dir_;
  test::ByteTokenizer tok_;
};

TEST(HellaswagPreprocess, MatchesLmEval) {
  EXPECT_EQ(hellaswag_preprocess("  How to sleep [title] Stop exercising. [step] Drink  water  "),
            "How to sleep. Stop exercising. Drink water");
  EXPECT_EQ(hellaswag_preprocess("a [b [c] d] e"), "a d] e");  // shortest match from the first '['
  EXPECT_EQ(hellaswag_preprocess("no artifacts"), "no artifacts");
  EXPECT_EQ(hellaswag_preprocess("x   y"), "x  y");  // one pass of "  " -> " ", as str.replace
  EXPECT_EQ(hellaswag_preprocess("open [ bracket"), "open [ bracket");
  EXPECT_EQ(capitalize_ascii("the LADY"), "The lady");
  EXPECT_EQ(capitalize_ascii(""), "");
}

TEST_F(HellaswagTest, ReadsThePlainAndCompressedFile) {
  for (bool compressed : {false, true}) {
    const std::string path = compressed ? dir_.write("hs.jsonl.zst", zstd_compress(kThreeItems))
                                        : dir_.write("hs.jsonl", kThreeItems);
    const auto items = read_hellaswag(path);
    ASSERT_EQ(items.size(), 3u);
    EXPECT_EQ(items[0].context, "Roof shingle removal: A man is sitting on a roof. he");
    EXPECT_EQ(items[1].context, "Health: How to sleep. Stop exercising. Drink water");
    EXPECT_EQ(items[1].endings[2], "zzz ");  // lm-eval strips before dropping "[step]"
    EXPECT_EQ(items[1].label, 0);
    EXPECT_EQ(items[2].context, "Cooking: stir it");
    EXPECT_EQ(items[2].line, 4u);
    EXPECT_EQ(read_hellaswag(path, 2).size(), 2u);
  }
}

TEST_F(HellaswagTest, AccuracyOfAScorerWithKnownChoices) {
  const auto items = read_hellaswag(dir_.write("hs.jsonl", kThreeItems));
  StubScorer stub;
  HellaswagOptions o;
  o.items_per_call = 2;  // two calls: batching must not change anything
  const HellaswagResult r = evaluate_hellaswag(items, tok_, stub, o);
  EXPECT_EQ(r.items, 3);
  EXPECT_EQ(r.correct, 1);
  EXPECT_EQ(r.correct_norm, 2);
  EXPECT_NEAR(r.acc(), 1.0 / 3, 1e-12);
  EXPECT_NEAR(r.acc_norm(), 2.0 / 3, 1e-12);
  EXPECT_EQ(r.scores[0].predicted, 0);
  EXPECT_EQ(r.scores[0].predicted_norm, 2);
  EXPECT_EQ(r.scores[2].predicted, 0);
  EXPECT_EQ(r.scores[0].loglik, (std::vector<double>{-3, -21, -7, -6}));
  // The requests: the context's bytes, then a space and the ending.
  ASSERT_EQ(stub.seen.size(), 12u);
  EXPECT_EQ(tok_.decode(stub.seen[0].context), items[0].context);
  EXPECT_EQ(tok_.decode(stub.seen[2].continuation), " abcdef");
  EXPECT_NEAR(r.acc_stderr(), std::sqrt(1.0 / 3 * 2.0 / 3 * 3.0 / 2 / 3), 1e-12);

  o.prepend_eot = true;
  stub.seen.clear();
  evaluate_hellaswag(items, tok_, stub, o);
  EXPECT_EQ(stub.seen[0].context.front(), tok_.eot_token());
}

TEST(HellaswagEncode, TrailingContextSpacesMoveToTheContinuation) {
  test::ByteTokenizer tok;
  const auto r = encode_request(tok, "abc  ", "d");
  EXPECT_EQ(tok.decode(r.context), "abc");
  EXPECT_EQ(tok.decode(r.continuation), "  d");
}

TEST_F(HellaswagTest, BadLinesAreClearErrors) {
  auto refused = [&](const std::string& text, const std::string& words) {
    const std::string p = dir_.write("bad.jsonl", text);
    try {
      read_hellaswag(p);
      ADD_FAILURE() << "accepted " << text;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
    }
  };
  refused("{\"ctx\": \"a\", \"endings\": [\"b\", \"c\"], \"label\": 0}\nnot json\n", "bad.jsonl:2");
  refused("{\"ctx\": \"a\", \"endings\": [\"b\"], \"label\": 0}\n", "endings");
  refused("{\"ctx\": \"a\", \"endings\": [\"b\", \"c\"], \"label\": 2}\n", "out of range");
  refused("{\"ctx\": \"a\", \"endings\": [\"b\", \"c\"], \"label\": \"x\"}\n", "not an integer");
  refused("{\"endings\": [\"b\", \"c\"], \"label\": 0}\n", "'ctx'");
  refused("\n\n", "no HellaSwag items");
}

// ---- the model's scorer ------------------------------------------------------------------------

ModelConfig byte_model() {
  ModelConfig c;
  c.n_layer = 2;
  c.d_model = 32;
  c.head_dim = 16;
  c.hidden = 64;
  c.vocab_size = 256;
  c.seq_len = 32;
  c.init_std = 0.3f;  // large enough that the endings' scores differ clearly
  return c;
}

// log p(continuation | context), one full forward per continuation token, in double.
double independent_loglik(Model& m, const LoglikRequest& r) {
  std::vector<int32_t> s(r.context);
  s.insert(s.end(), r.continuation.begin(), r.continuation.end());
  const int64_t T = m.config().seq_len;
  if (int64_t(s.size()) > T + 1) s.erase(s.begin(), s.end() - (T + 1));
  std::vector<float> logits(256);
  double sum = 0;
  for (size_t pos = s.size() - r.continuation.size(); pos < s.size(); ++pos) {
    m.last_logits(s.data(), int64_t(pos), logits.data());
    double mx = -1e30, z = 0;
    for (float v : logits) mx = std::max(mx, double(v));
    for (float v : logits) z += std::exp(double(v) - mx);
    sum += double(logits[size_t(s[pos])]) - mx - std::log(z);
  }
  return sum;
}

TEST_F(HellaswagTest, ModelScorerMatchesAnIndependentComputation) {
  Model model(byte_model(), 4);
  model.init_weights(11);
  // The three items plus one whose context is longer than the model's sequence (left-truncated).
  std::string text = kThreeItems;
  text += R"({"ctx": "A very long context that does not fit in thirty-two tokens at all, surely", "endings": ["yes", "no", "maybe so"], "label": 2})";
  const auto items = read_hellaswag(dir_.write("hs.jsonl", text));
  ModelScorer scorer(model, 3);  // batches mixing lengths, with padding
  HellaswagOptions o;
  o.items_per_call = 3;
  const HellaswagResult r = evaluate_hellaswag(items, tok_, scorer, o);
  int64_t correct = 0, correct_norm = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    std::vector<double> ll, norm;
    for (size_t e = 0; e < items[i].endings.size(); ++e) {
      const auto req = encode_request(tok_, items[i].context, " " + items[i].endings[e]);
      ll.push_back(independent_loglik(model, req));
      norm.push_back(ll.back() / double(items[i].endings[e].size()));
      EXPECT_NEAR(r.scores[i].loglik[e], ll.back(), 1e-3 + 1e-5 * std::fabs(ll.back())) << i << " " << e;
    }
    correct += argmax_first(ll) == items[i].label;
    correct_norm += argmax_first(norm) == items[i].label;
    EXPECT_EQ(r.scores[i].predicted, argmax_first(ll)) << i;
    EXPECT_EQ(r.scores[i].predicted_norm, argmax_first(norm)) << i;
  }
  EXPECT_EQ(r.correct, correct);
  EXPECT_EQ(r.correct_norm, correct_norm);
}

// The scorer over a per-token-loss function (here the CPU engine's, which loaded the model) gives
// exactly the scores of the scorer over the Model.
TEST_F(HellaswagTest, ScorerOverAnEngineEqualsTheModels) {
  Model model(byte_model(), 4);
  model.init_weights(12);
  CpuEngine engine(byte_model(), QuantConfig::none(), AdamWConfig{}, 4);
  engine.load_model(model);
  ModelScorer over_model(model, 3);
  ModelScorer over_engine([&](const int32_t* x, const int32_t* y, int64_t B, int64_t T,
                              float* losses) { engine.forward_loss(x, y, B, T, losses); },
                          3, byte_model().seq_len);
  std::string text = kThreeItems;
  text += R"({"ctx": "A very long context that does not fit in thirty-two tokens at all, surely", "endings": ["yes", "no", "maybe so"], "label": 2})";
  const auto items = read_hellaswag(dir_.write("hs.jsonl", text));
  const HellaswagResult a = evaluate_hellaswag(items, tok_, over_model), b = evaluate_hellaswag(items, tok_, over_engine);
  ASSERT_EQ(a.scores.size(), b.scores.size());
  for (size_t i = 0; i < a.scores.size(); ++i) {
    EXPECT_EQ(b.scores[i].loglik, a.scores[i].loglik) << i;
    EXPECT_EQ(b.scores[i].predicted, a.scores[i].predicted) << i;
    EXPECT_EQ(b.scores[i].predicted_norm, a.scores[i].predicted_norm) << i;
  }
}

}  // namespace
}  // namespace quest
