// `quest tokenizer train` as a library call: a small SentencePiece BPE model that round-trips text.
#include <gtest/gtest.h>

#include "core/error.h"
#include "core/file_io.h"
#include "core/log.h"
#include "core/rng.h"
#include "data/load_tokenizer.h"
#include "data/sentencepiece_tokenizer.h"
#include "data/sha256.h"
#include "data/temp_dir.h"
#include "data/tokenizer_train.h"

namespace quest {
namespace {

using test::TempDir;

// A deterministic English-like text with some non-ASCII characters.
std::string small_corpus(uint64_t seed, int lines) {
  static const char* words[] = {"the", "whale", "sea", "ship", "captain", "white", "and", "of",
                                "a", "to", "in", "his", "was", "that", "it", "Ahab", "Ishmael",
                                "harpoon", "deck", "wind", "caf\u00e9", "na\u00efve", "12", "1851"};
  Rng rng(seed);
  std::string text;
  for (int l = 0; l < lines; ++l) {
    const int n = 3 + int(rng.below(12));
    for (int k = 0; k < n; ++k) {
      if (k) text += rng.below(9) ? " " : ", ";
      text += words[rng.below(std::size(words))];
    }
    text += rng.below(5) ? ".\n" : ".\n\n";
  }
  return text;
}

TEST(Sha256, KnownDigests) {
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex(std::string(1000, 'a')),
            "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3");
  EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

#ifdef QUEST_HAVE_SENTENCEPIECE
TEST(TokenizerTrain, TrainsAModelThatRoundTrips) {
  set_log_sink([](LogLevel, std::string_view) {});
  TempDir dir;
  dir.write("corpus.txt", small_corpus(1, 3000));
  TokenizerTrainOptions o;
  o.inputs = {dir / "corpus.txt"};
  o.output = dir / "tok.model";
  o.vocab_size = 400;
  o.threads = 2;
  const auto r = train_sentencepiece(o);
  set_log_sink(nullptr);
  EXPECT_EQ(r.vocab_size, 400);
  EXPECT_EQ(r.documents, 1u);
  EXPECT_GT(r.sampled_lines, 2000u);

  const auto tok = load_tokenizer(o.output);
  EXPECT_EQ(tok->vocab_size(), 400);
  EXPECT_EQ(tok->eot_token(), 2);
  EXPECT_EQ(tok->name(), "sentencepiece:" + sha256_hex(read_text_file(o.output)));
  // Identity normalization and byte fallback: anything comes back exactly, even text it never saw.
  for (const std::string text :
       {std::string("  the whale,\tthe  sea\n\n"), std::string("\u00e9t\u00e9 \u4e2d\u6587 \U0001F40B!"),
        small_corpus(7, 20), std::string(" leading space"), std::string("x")}) {
    const auto ids = tok->encode(text);
    EXPECT_EQ(tok->decode(ids), text);
  }
  EXPECT_LT(tok->encode("the whale and the sea").size(), 10u);  // it learned merges

  // An existing output is refused without overwrite.
  try {
    train_sentencepiece(o);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("already exists"), std::string::npos) << e.what();
  }
}

TEST(TokenizerTrain, RefusesBadSettings) {
  TempDir dir;
  dir.write("empty.txt", "\n\n");
  TokenizerTrainOptions o;
  o.inputs = {dir / "empty.txt"};
  o.output = dir / "tok.model";
  o.vocab_size = 100;
  EXPECT_THROW(train_sentencepiece(o), Error);
  o.vocab_size = 400;
  try {
    train_sentencepiece(o);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("corpus is empty"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(file_exists(o.output));
  dir.write("not.model", "garbage");
  EXPECT_THROW(load_tokenizer(dir / "not.model"), Error);
  EXPECT_THROW(load_tokenizer("gpt3"), Error);
}
#endif

}  // namespace
}  // namespace quest
