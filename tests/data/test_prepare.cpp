// `quest prepare` as a library call: round trips through the shards, split and separator rules,
// thread-count independence, bad input, overwrite protection and cleanup on failure.
#include <gtest/gtest.h>

#include <filesystem>

#include "core/error.h"
#include "core/file_io.h"
#include "core/log.h"
#include "core/rng.h"
#include "data/corpus_files.h"
#include "data/gpt2_tokenizer.h"
#include "data/load_tokenizer.h"
#include "data/prepare.h"
#include "data/split_assign.h"
#include "data/temp_dir.h"
#include "data/token_dataset.h"
#include "data/tokenizer_train.h"

namespace quest {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

// One token per byte, at ids offset + byte; the separator is the last id. With offset > 65536 - 256
// it needs uint32 shards.
class ByteTokenizer : public Tokenizer {
 public:
  explicit ByteTokenizer(int32_t offset = 0) : offset_(offset) {}
  std::vector<int32_t> encode(std::string_view text) const override {
    std::vector<int32_t> ids;
    for (unsigned char c : text) ids.push_back(offset_ + c);
    return ids;
  }
  std::string decode(std::span<const int32_t> tokens) const override {
    std::string s;
    for (int32_t t : tokens) s.push_back(char(t - offset_));
    return s;
  }
  int32_t vocab_size() const override { return offset_ + 257; }
  int32_t eot_token() const override { return offset_ + 256; }
  std::string name() const override { return "bytes"; }

 private:
  int32_t offset_;
};

const Gpt2Tokenizer* gpt2() {
  static const auto tok = [] {
    const std::string dir = default_gpt2_dir();
    return file_exists(dir + "/encoder.json") && file_exists(dir + "/vocab.bpe")
               ? Gpt2Tokenizer::load(dir)
               : std::unique_ptr<Gpt2Tokenizer>();
  }();
  return tok.get();
}

std::vector<std::string> sample_docs(int n, uint64_t seed) {
  static const char* pieces[] = {"Call me Ishmael.", " The whale", "\n\n", "caf\u00e9 ",
                                 "\u4e2d\u6587", " \U0001F40B", "<|endoftext|>", "  spaces  ",
                                 "\ttab", "1851", "don't", "\r\n", "end."};
  Rng rng(seed);
  std::vector<std::string> docs;
  for (int i = 0; i < n; ++i) {
    std::string d;
    const int k = 1 + int(rng.below(30));
    for (int j = 0; j < k; ++j) d += pieces[rng.below(std::size(pieces))];
    if (rng.below(2)) d += std::to_string(i);  // never only whitespace (that is no document)
    else d = std::to_string(i) + d;
    docs.push_back(d);
  }
  return docs;
}

// The documents of a split, read back from the shards: the stream cut at the separators.
std::vector<std::string> read_back(const std::string& dir, const std::string& split,
                                   const Tokenizer& tok, EotPosition eot) {
  const auto data = TokenDataset::open_split(dir, split);
  std::vector<int32_t> all(data.size());
  data.copy(0, all.size(), all.data());
  std::vector<std::string> docs;
  std::vector<int32_t> cur;
  bool open = false;
  for (const int32_t t : all) {
    if (t == tok.eot_token()) {
      if (eot == EotPosition::After) docs.push_back(tok.decode(cur));
      else if (open) docs.push_back(tok.decode(cur));
      cur.clear();
      open = true;
    } else {
      cur.push_back(t);
    }
  }
  if (eot == EotPosition::Before && open) docs.push_back(tok.decode(cur));
  EXPECT_TRUE(eot == EotPosition::Before || cur.empty()) << "tokens after the last separator";
  EXPECT_TRUE(eot == EotPosition::After || all.empty() || all[0] == tok.eot_token());
  return docs;
}

// Expected split of docs under a fraction.
void expected_split(const std::vector<std::string>& docs, double fraction, uint64_t seed,
                    std::vector<std::string>& train, std::vector<std::string>& val) {
  const auto a = SplitAssigner::fraction(fraction, seed);
  for (size_t i = 0; i < docs.size(); ++i) (a.is_validation(i) ? val : train).push_back(docs[i]);
}

std::vector<std::string> dir_files(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected quest::Error";
  return {};
}

#define EXPECT_CONTAINS(haystack, needle) \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos) << (haystack)

struct Quiet {  // the library's warnings and progress lines are not the test's output
  Quiet() { set_log_sink([](LogLevel, std::string_view) {}); }
  ~Quiet() { set_log_sink(nullptr); }
};

PrepareOptions base_options(const TempDir& dir, std::vector<std::string> inputs) {
  PrepareOptions o;
  o.inputs = std::move(inputs);
  o.out_dir = dir / "out";
  o.threads = 2;
  o.progress = false;
  return o;
}

TEST(Prepare, Gpt2RoundTripAndMeta) {
  if (!gpt2()) GTEST_SKIP() << "GPT-2 files not found in " << default_gpt2_dir();
  Quiet quiet;
  TempDir dir;
  const auto docs = sample_docs(60, 1);
  auto o = base_options(dir, {dir.write("in.jsonl.zst", test::zstd_compress(test::jsonl(docs)))});
  o.val_fraction = 0.25;
  o.seed = 5;
  o.shard_tokens = 200;  // several shards per split
  const auto r = prepare_corpus(o, *gpt2());

  std::vector<std::string> train, val;
  expected_split(docs, 0.25, 5, train, val);
  ASSERT_FALSE(val.empty());
  EXPECT_EQ(read_back(o.out_dir, "train", *gpt2(), EotPosition::Before), train);
  EXPECT_EQ(read_back(o.out_dir, "val", *gpt2(), EotPosition::Before), val);

  const auto data = TokenDataset::open_split(o.out_dir, "train");
  ASSERT_TRUE(data.meta());
  const SplitMeta& m = *data.meta();
  EXPECT_EQ(m.tokenizer, "gpt2");
  EXPECT_EQ(m.vocab_size, 50257);
  EXPECT_EQ(m.eot_token, 50256);
  EXPECT_EQ(m.eot_position, "before");
  EXPECT_EQ(m.documents, train.size());
  uint64_t bytes = 0;
  for (const auto& d : train) bytes += d.size();
  EXPECT_EQ(m.text_bytes, bytes);
  EXPECT_EQ(m.tokens, data.size());
  EXPECT_EQ(r.train.tokens, data.size());
  EXPECT_GT(data.num_shards(), 2u);
  EXPECT_EQ(data.shard(0).size(), 200u);
  EXPECT_EQ(data.shard(0).width(), 2);
  EXPECT_EQ(r.val.documents, val.size());
}

TEST(Prepare, SeparatorAfterAndUint32Shards) {
  Quiet quiet;
  TempDir dir;
  const auto docs = sample_docs(30, 2);
  const ByteTokenizer tok(70000);  // ids above 65535
  auto o = base_options(dir, {dir.write("in.jsonl", test::jsonl(docs))});
  o.eot = EotPosition::After;
  o.val_fraction = 0.0;
  o.shard_tokens = 500;
  prepare_corpus(o, tok);
  EXPECT_EQ(read_back(o.out_dir, "train", tok, EotPosition::After), docs);
  const auto data = TokenDataset::open_split(o.out_dir, "train");
  EXPECT_EQ(data.shard(0).width(), 4);
  EXPECT_EQ(data.meta()->eot_position, "after");
  EXPECT_FALSE(file_exists(o.out_dir + "/val-000000.bin"));
}

#ifdef QUEST_HAVE_SENTENCEPIECE
TEST(Prepare, SentencePieceRoundTripWithChapters) {
  Quiet quiet;
  TempDir dir;
  // Chapters separated by 3 blank lines, as in the default corpus.
  std::vector<std::string> chapters;
  std::string book;
  for (int c = 0; c < 12; ++c) {
    std::string ch = "CHAPTER " + std::to_string(c + 1) + ".\n\n";
    for (const auto& d : sample_docs(6, 100 + c)) {
      std::string line = d;
      std::replace(line.begin(), line.end(), '\n', ' ');  // no blank lines inside a chapter
      std::replace(line.begin(), line.end(), '\r', ' ');
      ch += line + "\n";
    }
    chapters.push_back(ch);
    book += ch + (c % 2 ? "\n\n\n" : "\n\n\n\n\n");
  }
  const auto corpus = dir.write("book.txt", book);
  TokenizerTrainOptions t;
  t.inputs = {corpus};
  t.output = dir / "tok.model";
  t.vocab_size = 400;
  t.threads = 2;
  train_sentencepiece(t);
  const auto tok = load_tokenizer(t.output);

  auto o = base_options(dir, {corpus});
  o.split_blank_lines = 3;
  o.val_documents = 3;
  o.seed = 9;
  const auto r = prepare_corpus(o, *tok);
  EXPECT_EQ(r.train.documents, 9u);
  EXPECT_EQ(r.val.documents, 3u);
  const auto assign = SplitAssigner::count(3, chapters.size(), 9);
  std::vector<std::string> train, val;
  for (size_t i = 0; i < chapters.size(); ++i)
    (assign.is_validation(i) ? val : train).push_back(chapters[i]);
  EXPECT_EQ(read_back(o.out_dir, "train", *tok, EotPosition::Before), train);
  EXPECT_EQ(read_back(o.out_dir, "val", *tok, EotPosition::Before), val);
  const auto meta = TokenDataset::open_split(o.out_dir, "val").meta();
  EXPECT_EQ(meta->tokenizer, tok->name());
  EXPECT_EQ(meta->vocab_size, 400);
}
#endif

TEST(Prepare, OutputIndependentOfThreadCount) {
  Quiet quiet;
  TempDir dir;
  const ByteTokenizer tok;
  // Large enough for many batches (256 KiB each), in two files.
  std::vector<std::string> a, b;
  for (const auto& d : sample_docs(2500, 3)) a.push_back(d + d + d);
  for (const auto& d : sample_docs(2500, 4)) b.push_back(d + d + d);
  const auto fa = dir.write("a.jsonl", test::jsonl(a));
  const auto fb = dir.write("b.jsonl.zst", test::zstd_compress(test::jsonl(b)));
  std::vector<std::vector<std::string>> contents;
  for (int threads : {1, 4}) {
    auto o = base_options(dir, {fa, fb});
    o.out_dir = dir / ("out" + std::to_string(threads));
    o.threads = threads;
    o.shard_tokens = 300'000;
    const auto r = prepare_corpus(o, tok);
    EXPECT_EQ(r.train.documents + r.val.documents, 5000u);
    std::vector<std::string> files;
    for (const auto& name : dir_files(o.out_dir)) files.push_back(read_text_file(o.out_dir + "/" + name));
    contents.push_back(files);
    if (threads == 1) {
      EXPECT_GE(dir_files(o.out_dir).size(), 4u);
    }
  }
  EXPECT_EQ(dir_files(dir / "out1"), dir_files(dir / "out4"));
  EXPECT_TRUE(contents[0] == contents[1]) << "outputs differ between 1 and 4 threads";
}

// Every kind of bad input: a message with file and line, and no file left in the output.
TEST(Prepare, BadInputFailsCleanly) {
  Quiet quiet;
  TempDir dir;
  const ByteTokenizer tok;
  std::string good;
  for (int i = 0; i < 200; ++i) good += test::jsonl_line(i, std::string(1000, 'a' + i % 26));
  std::string big;
  for (int i = 0; i < 2000; ++i) big += test::jsonl_line(i, std::string(1000, 'a' + i % 26));
  const std::string z = test::zstd_compress(good + test::jsonl_line(999, "last"), true);
  std::string corrupt = z;
  corrupt[z.size() / 2] ^= 0x5a;
  corrupt[z.size() / 2 + 7] ^= 0x5a;
  struct Case {
    std::string name, content, message;
  };
  const std::vector<Case> cases = {
      {"json.jsonl", good + "{\"text\": \n", "json.jsonl:201: invalid JSON"},
      {"field.jsonl", good + R"({"txt": "x"})" "\n", "field.jsonl:201: missing field \"text\""},
      {"utf8.jsonl", good + "{\"text\": \"a\xc3\"}\n", "utf8.jsonl:201: invalid UTF-8: byte 0xc3 at column 12"},
      // Far enough in that shards were written (and must be removed again).
      {"late.jsonl", big + "{\"text\": 1}\n", "late.jsonl:2001: field \"text\" is a number"},
      {"utf8.txt", std::string(300000, 'x') + "\n\xe2\x82\n", "utf8.txt:2: invalid UTF-8"},
      {"cut.jsonl.zst", z.substr(0, z.size() - 20), "truncated zstd data"},
      {"corrupt.jsonl.zst", corrupt, "corrupt zstd data"},
      {"empty.jsonl", "\n\n", "the corpus is empty"},
  };
  for (const auto& c : cases) {
    auto o = base_options(dir, {dir.write(c.name, c.content)});
    o.out_dir = dir / ("out-" + c.name);
    o.threads = 1;
    o.shard_tokens = 10'000;  // shards are written before the bad record is reached
    const auto msg = error_of([&] { prepare_corpus(o, tok); });
    EXPECT_CONTAINS(msg, c.message);
    if (c.name != "empty.jsonl") EXPECT_CONTAINS(msg, dir / c.name);
    EXPECT_TRUE(dir_files(o.out_dir).empty()) << c.name << " left " << dir_files(o.out_dir).size();
  }
}

TEST(Prepare, SkipBadCountsAndReports) {
  Quiet quiet;
  TempDir dir;
  const ByteTokenizer tok;
  const auto f = dir.write("mixed.jsonl", test::jsonl_line(0, "one") + "not json\n" +
                                              R"({"x": 1})" "\n" + test::jsonl_line(3, "two") +
                                              "{\"text\": \"\\ud800\"}\n");
  const auto z = dir.write("t.txt.zst", test::zstd_compress("never seen").substr(0, 8));
  auto o = base_options(dir, {f, z});
  o.skip_bad = true;
  o.val_fraction = 0.0;
  const auto r = prepare_corpus(o, tok);
  EXPECT_EQ(r.skipped_bad, 4u);
  EXPECT_EQ(r.train.skipped_bad, 4u);
  EXPECT_EQ(read_back(o.out_dir, "train", tok, EotPosition::Before),
            (std::vector<std::string>{"one", "two"}));
  EXPECT_EQ(TokenDataset::open_split(o.out_dir, "train").meta()->skipped_bad, 4u);

  // Everything bad: still an empty corpus.
  auto o2 = base_options(dir, {z});
  o2.out_dir = dir / "out2";
  o2.skip_bad = true;
  EXPECT_CONTAINS(error_of([&] { prepare_corpus(o2, tok); }), "after skipping 1 bad records");
}

TEST(Prepare, RefusesExistingOutputUnlessOverwrite) {
  Quiet quiet;
  TempDir dir;
  const ByteTokenizer tok;
  const auto f = dir.write("in.jsonl", test::jsonl(sample_docs(50, 6)));
  auto o = base_options(dir, {f});
  o.shard_tokens = 100;
  const auto first = prepare_corpus(o, tok);
  const auto before = dir_files(o.out_dir);
  EXPECT_CONTAINS(error_of([&] { prepare_corpus(o, tok); }), "already holds prepared data");
  EXPECT_CONTAINS(error_of([&] { prepare_corpus(o, tok); }), "--overwrite");
  EXPECT_EQ(dir_files(o.out_dir), before);

  // Overwrite with bigger shards: the old, now surplus shards are gone.
  o.overwrite = true;
  o.shard_tokens = 1'000'000;
  const auto second = prepare_corpus(o, tok);
  EXPECT_EQ(dir_files(o.out_dir), (std::vector<std::string>{"meta.json", "train-000000.bin", "val-000000.bin"}));
  EXPECT_EQ(second.train.tokens, first.train.tokens);

  // Shards without meta.json (an interrupted run) are refused too.
  fs::remove(o.out_dir + "/meta.json");
  o.overwrite = false;
  EXPECT_CONTAINS(error_of([&] { prepare_corpus(o, tok); }), "unfinished run");
}

TEST(Prepare, ExactValidationCountAndValInputs) {
  Quiet quiet;
  TempDir dir;
  const ByteTokenizer tok;
  const auto docs = sample_docs(40, 8);
  const auto f = dir.write("in.jsonl", test::jsonl(docs));
  auto o = base_options(dir, {f});
  o.val_documents = 7;
  auto r = prepare_corpus(o, tok);
  EXPECT_EQ(r.val.documents, 7u);
  EXPECT_EQ(r.train.documents, 33u);
  o.val_documents = 41;
  o.out_dir = dir / "out2";
  EXPECT_CONTAINS(error_of([&] { prepare_corpus(o, tok); }), "only 40 documents");

  // Separate validation inputs: all of the main inputs train.
  auto o3 = base_options(dir, {f});
  o3.out_dir = dir / "out3";
  o3.val_inputs = {dir.write("val.txt", "held out")};
  r = prepare_corpus(o3, tok);
  EXPECT_EQ(r.train.documents, 40u);
  EXPECT_EQ(read_back(o3.out_dir, "val", tok, EotPosition::Before), std::vector<std::string>{"held out"});
  EXPECT_EQ(read_back(o3.out_dir, "train", tok, EotPosition::Before), docs);
}

TEST(Prepare, CancelLeavesNothing) {
  Quiet quiet;
  TempDir dir;
  const ByteTokenizer tok;
  auto o = base_options(dir, {dir.write("in.jsonl", test::jsonl(sample_docs(50, 6)))});
  std::atomic<bool> cancel{true};
  o.cancel = &cancel;
  EXPECT_CONTAINS(error_of([&] { prepare_corpus(o, tok); }), "interrupted");
  EXPECT_TRUE(dir_files(o.out_dir).empty());
}

TEST(SplitAssigner, FractionAndCount) {
  const auto a = SplitAssigner::fraction(0.1, 42);
  int val = 0;
  for (uint64_t i = 0; i < 100000; ++i) val += a.is_validation(i);
  EXPECT_NEAR(val, 10000, 400);
  const auto b = SplitAssigner::fraction(0.1, 43);
  int same = 0;
  for (uint64_t i = 0; i < 1000; ++i) same += a.is_validation(i) == b.is_validation(i);
  EXPECT_LT(same, 950);  // another seed, another split
  const auto c = SplitAssigner::count(10, 100, 42);
  int n = 0;
  for (uint64_t i = 0; i < 100; ++i) n += c.is_validation(i);
  EXPECT_EQ(n, 10);
  EXPECT_TRUE(SplitAssigner::fraction(1.0, 1).is_validation(123));
  EXPECT_FALSE(SplitAssigner::fraction(0.0, 1).is_validation(123));
}

}  // namespace
}  // namespace quest
