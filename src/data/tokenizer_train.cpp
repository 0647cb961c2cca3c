#include "data/tokenizer_train.h"

#include <chrono>
#include <thread>
#include <unordered_map>

#include "core/error.h"
#include "core/file_io.h"
#include "core/log.h"
#include "core/rng.h"
#include "data/sentencepiece_tokenizer.h"

#ifdef QUEST_HAVE_SENTENCEPIECE
#include <sentencepiece_trainer.h>
#endif

namespace quest {

namespace {

// SentencePiece drops sentences longer than its max_sentence_length; long lines are cut into
// pieces below that, at a space where possible and never inside a UTF-8 character.
constexpr size_t kMaxPiece = 4000;

template <class F>
void for_each_piece(std::string_view line, F&& f) {
  while (line.size() > kMaxPiece) {
    size_t cut = line.rfind(' ', kMaxPiece);
    if (cut == std::string_view::npos || cut < kMaxPiece / 2) {
      cut = kMaxPiece;
      while (cut > 0 && (uint8_t(line[cut]) & 0xC0) == 0x80) --cut;  // continuation byte
    }
    f(line.substr(0, cut));
    line.remove_prefix(cut);
  }
  if (!line.empty()) f(line);
}

#ifdef QUEST_HAVE_SENTENCEPIECE
class VectorIterator : public sentencepiece::SentenceIterator {
 public:
  explicit VectorIterator(const std::vector<std::string>& v) : v_(v) {}
  bool done() const override { return i_ >= v_.size(); }
  void Next() override { ++i_; }
  const std::string& value() const override { return v_[i_]; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  const std::vector<std::string>& v_;
  size_t i_ = 0;
};
#endif

}  // namespace

TokenizerTrainReport train_sentencepiece(const TokenizerTrainOptions& o) {
#ifndef QUEST_HAVE_SENTENCEPIECE
  fail("cannot train a tokenizer: quest was built without libsentencepiece");
#else
  const auto start = std::chrono::steady_clock::now();
  QUEST_CHECK(!o.output.empty(), "no output model file given");
  QUEST_CHECK(o.vocab_size >= 300 && o.vocab_size <= 1'000'000,
              "vocabulary size {} is out of range: byte fallback alone needs 256 ids plus the "
              "special ones (use 300 or more)",
              o.vocab_size);
  QUEST_CHECK(o.max_sentences > 0, "the sample must hold at least one line");
  QUEST_CHECK(o.overwrite || !file_exists(o.output),
              "'{}' already exists; pass --overwrite to replace it", o.output);

  // Uniform sample of the corpus's non-blank lines (reservoir sampling, seeded).
  TokenizerTrainReport r;
  std::vector<std::string> sample;
  Rng rng(o.seed);
  DocumentReader reader(expand_inputs(o.inputs), o.source);
  Document doc;
  while (reader.next(doc)) {
    ++r.documents;
    std::string_view text = doc.text;
    while (!text.empty()) {
      const size_t nl = text.find('\n');
      const std::string_view line = text.substr(0, nl);
      text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
      if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
      for_each_piece(line, [&](std::string_view piece) {
        const uint64_t seen = r.lines++;
        if (sample.size() < o.max_sentences) {
          sample.emplace_back(piece);
        } else if (const uint64_t j = rng.below(seen + 1); j < o.max_sentences) {
          sample[j].assign(piece);
        }
      });
    }
  }
  r.skipped_bad = reader.bad_records();
  QUEST_CHECK(!sample.empty(), "the corpus is empty: no text to train a tokenizer on");
  r.sampled_lines = sample.size();
  for (const auto& s : sample) r.sampled_bytes += s.size();

  const int threads =
      o.threads > 0 ? o.threads : int(std::max(1u, std::thread::hardware_concurrency()));
  // Identity normalization and kept whitespace, so that decode(encode(text)) == text; the
  // document separator is </s> (id 2).
  const std::unordered_map<std::string, std::string> args = {
      {"model_type", "bpe"},
      {"vocab_size", std::to_string(o.vocab_size)},
      {"byte_fallback", "true"},
      {"character_coverage", fmt::format("{}", o.character_coverage)},
      {"normalization_rule_name", "identity"},
      {"remove_extra_whitespaces", "false"},
      {"add_dummy_prefix", "true"},
      {"split_digits", "true"},
      {"allow_whitespace_only_pieces", "true"},
      {"max_sentence_length", std::to_string(kMaxPiece * 2)},
      {"input_sentence_size", "0"},
      {"shuffle_input_sentence", "false"},
      {"num_threads", std::to_string(threads)},
      {"unk_id", "0"},
      {"bos_id", "1"},
      {"eos_id", "2"},
      {"pad_id", "-1"},
      {"minloglevel", "2"},
  };
  VectorIterator it(sample);
  std::string proto;
  log_info("tokenizer: training a {}-piece BPE model on {} lines ({:.1f} MB) from {} documents",
           o.vocab_size, r.sampled_lines, double(r.sampled_bytes) / 1e6, r.documents);
  const auto status = sentencepiece::SentencePieceTrainer::Train(args, &it, &proto);
  QUEST_CHECK(status.ok(), "SentencePiece training failed: {}", status.ToString());

  const auto tok = SentencePieceTokenizer::from_serialized(proto, o.output);
  r.vocab_size = tok->vocab_size();
  r.name = tok->name();
  AtomicFile f(o.output);
  f.write(proto);
  f.commit();
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return r;
#endif
}

}  // namespace quest
