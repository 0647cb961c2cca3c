// Gpt2Tokenizer against token ids from the npm package gpt-3-encoder (tests/data/gpt2_fixtures.json,
// written by tests/data/gen_gpt2_fixtures.js), plus round trips and error cases.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "core/file_io.h"
#include "data/gpt2_tokenizer.h"
#include "data/utf8.h"
#include "data/temp_dir.h"
#include "data/unicode_tables.h"

namespace quest {
namespace {

const Gpt2Tokenizer* tokenizer() {
  static const std::unique_ptr<Gpt2Tokenizer> tok = [] {
    const std::string dir = default_gpt2_dir();
    if (!file_exists(dir + "/encoder.json") || !file_exists(dir + "/vocab.bpe")) {
      return std::unique_ptr<Gpt2Tokenizer>();
    }
    return Gpt2Tokenizer::load(dir);
  }();
  return tok.get();
}

#define REQUIRE_GPT2()                                                                         \
  const Gpt2Tokenizer* tok = tokenizer();                                                      \
  if (tok == nullptr) {                                                                        \
    GTEST_SKIP() << "GPT-2 files not found in " << default_gpt2_dir()                          \
                 << " (encoder.json, vocab.bpe): run scripts/setup.sh";                        \
  }

const nlohmann::json& fixtures() {
  static const nlohmann::json j =
      nlohmann::json::parse(read_text_file(QUEST_SOURCE_DIR "/tests/data/gpt2_fixtures.json"));
  return j;
}

std::string printable(const std::string& s) { return nlohmann::json(s).dump(); }

// 64-bit FNV-1a, as in gen_gpt2_fixtures.js (ids hashed as 4 little-endian bytes each).
uint64_t fnv1a(const void* data, size_t n, uint64_t h = 0xcbf29ce484222325ull) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
  return h;
}
uint64_t fnv1a_ids(const std::vector<int32_t>& ids) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (const int32_t id : ids) {
    const auto v = static_cast<uint32_t>(id);
    const unsigned char b[4] = {static_cast<unsigned char>(v), static_cast<unsigned char>(v >> 8),
                                static_cast<unsigned char>(v >> 16),
                                static_cast<unsigned char>(v >> 24)};
    h = fnv1a(b, 4, h);
  }
  return h;
}


TEST(Gpt2Tokenizer, Identity) {
  REQUIRE_GPT2();
  EXPECT_EQ(tok->vocab_size(), 50257);
  EXPECT_EQ(tok->eot_token(), 50256);
  EXPECT_EQ(tok->name(), "gpt2");
  EXPECT_EQ(tok->token_bytes(50256), "<|endoftext|>");
  EXPECT_EQ(tok->token_bytes(220), " ");
  EXPECT_EQ(tok->token_bytes(198), "\n");
}

TEST(Gpt2Tokenizer, MatchesReferenceIds) {
  REQUIRE_GPT2();
  const auto& cases = fixtures().at("cases");
  ASSERT_GT(cases.size(), 700u);
  int failures = 0;
  for (const auto& c : cases) {
    const std::string text = c.at("text").get<std::string>();
    const std::vector<int32_t> want = c.at("ids").get<std::vector<int32_t>>();
    const std::vector<int32_t> got = tok->encode(text);
    if (got != want && ++failures <= 10) {
      ADD_FAILURE() << "text " << printable(text) << "\n  got  " << nlohmann::json(got).dump()
                    << "\n  want " << nlohmann::json(want).dump();
    }
    EXPECT_EQ(tok->decode(got), text) << printable(text);
  }
  EXPECT_EQ(failures, 0);
}

TEST(Gpt2Tokenizer, EndOfTextIsPlainText) {
  REQUIRE_GPT2();
  const auto ids = tok->encode("a<|endoftext|>b");
  EXPECT_GT(ids.size(), 3u);
  for (const int32_t id : ids) EXPECT_NE(id, tok->eot_token());
  const int32_t eot = tok->eot_token();
  EXPECT_EQ(tok->decode(std::span<const int32_t>(&eot, 1)), "<|endoftext|>");
}

// The whole of Moby Dick against the count and hash the reference encoder gave.
TEST(Gpt2Tokenizer, MatchesReferenceOnCorpus) {
  REQUIRE_GPT2();
  const auto& corpora = fixtures().at("corpora");
  if (corpora.empty()) GTEST_SKIP() << "no corpus checks in the fixtures";
  const std::string gpt2_dir = default_gpt2_dir();
  const std::string cache = gpt2_dir.substr(0, gpt2_dir.rfind('/'));
  for (const auto& c : corpora) {
    const std::string path = cache + "/" + c.at("file").get<std::string>();
    if (!file_exists(path)) GTEST_SKIP() << path << " not found: run scripts/setup.sh";
    const std::string text = read_text_file(path);
    char hex[17];
    std::snprintf(hex, sizeof hex, "%016llx",
                  static_cast<unsigned long long>(fnv1a(text.data(), text.size())));
    ASSERT_EQ(text.size(), c.at("bytes").get<size_t>()) << path << " differs from the fixture's";
    ASSERT_EQ(hex, c.at("text_fnv1a64").get<std::string>()) << path;
    const auto ids = tok->encode(text);
    EXPECT_EQ(ids.size(), c.at("tokens").get<size_t>()) << path;
    std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(fnv1a_ids(ids)));
    EXPECT_EQ(hex, c.at("ids_fnv1a64").get<std::string>()) << path;
    EXPECT_EQ(tok->decode(ids), text);
  }
}

TEST(Gpt2Tokenizer, RoundTripsRandomBytes) {
  REQUIRE_GPT2();
  std::mt19937 rng(1234);
  for (int k = 0; k < 2000; ++k) {
    std::string s(rng() % 64, '\0');
    // Mostly bytes that form partial or odd UTF-8 sequences, some ASCII.
    for (char& ch : s) ch = static_cast<char>(rng() % 3 == 0 ? 0x20 + rng() % 96 : rng() % 256);
    const auto ids = tok->encode(s);
    for (const int32_t id : ids) ASSERT_TRUE(id >= 0 && id < tok->eot_token());
    ASSERT_EQ(tok->decode(ids), s) << printable(s);
  }
  // Truncated, overlong, surrogate and out-of-range sequences next to text.
  for (const std::string s : {"\xE4\xB8", "a\xC0\xAF b", "\xED\xA0\x80x", "\xF4\x90\x80\x80 1",
                              "\xF8\x88\x80\x80\x80", "\x80\x80 's", " \xFF\xFE", "\xC3"}) {
    EXPECT_EQ(tok->decode(tok->encode(s)), s) << printable(s);
  }
}

TEST(Gpt2Tokenizer, RoundTripsRandomUnicode) {
  REQUIRE_GPT2();
  std::mt19937 rng(99);
  for (int k = 0; k < 2000; ++k) {
    std::string s;
    const int len = static_cast<int>(rng() % 40);
    for (int i = 0; i < len; ++i) {
      char32_t c;
      switch (rng() % 4) {
        case 0: c = 0x20 + rng() % 96; break;        // ASCII
        case 1: c = 0x80 + rng() % 0x780; break;     // two-byte forms
        case 2: c = 0x800 + rng() % 0xF800; break;   // BMP
        default: c = 0x10000 + rng() % 0x100000; break;  // astral
      }
      if (c >= 0xD800 && c <= 0xDFFF) c = U' ';
      append_utf8(s, c);
    }
    ASSERT_EQ(tok->decode(tok->encode(s)), s) << printable(s);
  }
}

TEST(Gpt2Tokenizer, LongWordsAndRuns) {
  REQUIRE_GPT2();
  // Far above the cache's word limit; exercises the heap merge on long inputs.
  for (const std::string unit : {"a", "ab", "=", " ", "\n", "9", "\xE4\xB8\xAD"}) {
    std::string s;
    while (s.size() < 100000) s += unit;
    EXPECT_EQ(tok->decode(tok->encode(s)), s);
  }
  // A word gives the same tokens on a cache miss and on the hit that follows, and the same
  // tokens as part of a longer text.
  for (const size_t len : {40, 200, 600}) {
    std::string word;
    for (size_t i = 0; i < len; ++i) word += "qzxj"[i % 4];
    const auto first = tok->encode(word);
    EXPECT_EQ(tok->encode(word), first);
    const auto in_text = tok->encode("the\n" + word + "!");  // "the", "\n", word, "!"
    ASSERT_EQ(in_text.size(), first.size() + 3);
    EXPECT_TRUE(std::equal(first.begin(), first.end(), in_text.begin() + 2));
  }
}

TEST(Gpt2Tokenizer, ConcurrentEncodeMatchesSerial) {
  REQUIRE_GPT2();
  const auto& cases = fixtures().at("cases");
  std::string text;
  for (const auto& c : cases) text += c.at("text").get<std::string>() + "\n";
  const auto want = tok->encode(text);
  std::vector<std::vector<int32_t>> got(4);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int r = 0; r < 5; ++r) got[t] = tok->encode(text);
    });
  }
  for (auto& th : threads) th.join();
  for (const auto& g : got) EXPECT_EQ(g, want);
}

TEST(Gpt2Tokenizer, DecodeRejectsInvalidIds) {
  REQUIRE_GPT2();
  const std::vector<int32_t> ok = {15496, 995};
  EXPECT_EQ(tok->decode(ok), "Hello world");
  EXPECT_EQ(tok->decode(std::vector<int32_t>{}), "");
  for (const int32_t bad : {50257, -1, 1 << 30}) {
    const std::vector<int32_t> ids = {15496, bad};
    try {
      tok->decode(ids);
      ADD_FAILURE() << "no error for id " << bad;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(std::to_string(bad)), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(tok->token_bytes(50257), Error);
}

TEST(Gpt2Tokenizer, LoadErrors) {
  test::TempDir dir;
  // Missing files.
  try {
    Gpt2Tokenizer::load(dir.path());
    ADD_FAILURE() << "no error for an empty directory";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("encoder.json"), std::string::npos) << e.what();
  }
  EXPECT_THROW(Gpt2Tokenizer::load(dir / "nonexistent"), Error);

  // A tiny, valid vocabulary: the 256 byte tokens, "ab", "abc" and <|endoftext|>.
  nlohmann::json enc = nlohmann::json::object();
  auto byte_key = [](int b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    int n = 0;
    if (!printable) {
      for (int x = 0; x < b; ++x) {
        n += !((x >= '!' && x <= '~') || (x >= 0xA1 && x <= 0xAC) || x >= 0xAE);
      }
    }
    std::string s;
    append_utf8(s, printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + n));
    return s;
  };
  for (int b = 0; b < 256; ++b) enc[byte_key(b)] = b;
  enc["ab"] = 256;
  enc["abc"] = 257;
  enc["<|endoftext|>"] = 258;
  dir.write("encoder.json", enc.dump());
  dir.write("vocab.bpe", "#version: 0.2\na b\nab c\n");
  const auto small = Gpt2Tokenizer::load(dir.path());
  EXPECT_EQ(small->vocab_size(), 259);
  EXPECT_EQ(small->eot_token(), 258);
  EXPECT_EQ(small->encode("abc abd"), (std::vector<int32_t>{257, ' ', 256, 'd'}));
  EXPECT_EQ(small->encode("abc"), std::vector<int32_t>{257});
  EXPECT_EQ(small->encode("abab"), (std::vector<int32_t>{256, 256}));
  EXPECT_EQ(small->encode("ab c"), (std::vector<int32_t>{256, ' ', 'c'}));
  EXPECT_EQ(small->decode(small->encode("abc abd")), "abc abd");

  auto expect_load_error = [&](const std::string& encoder_json, const std::string& merges,
                               const std::string& needle) {
    dir.write("encoder.json", encoder_json);
    dir.write("vocab.bpe", merges);
    try {
      Gpt2Tokenizer::load(dir.path());
      ADD_FAILURE() << "no error; expected one mentioning '" << needle << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  const std::string good_enc = enc.dump();
  expect_load_error("{not json", "#version: 0.2\n", "not valid JSON");
  expect_load_error("[1, 2]", "#version: 0.2\n", "JSON object");
  expect_load_error(good_enc, "#version: 0.2\na b c\n", "line 2");
  expect_load_error(good_enc, "#version: 0.2\na x\n", "missing from encoder.json");
  expect_load_error(good_enc, "#version: 0.2\nab c\na b\n", "later merge");
  expect_load_error(good_enc, "#version: 0.2\na b\na b\n", "repeats");
  auto bad = enc;
  bad["ab"] = 5;  // the id of another token
  expect_load_error(bad.dump(), "#version: 0.2\n", "used twice");
  bad = enc;
  bad.erase("ab");
  bad["\xE2\x82\xAC"] = 256;  // U+20AC stands for no byte
  expect_load_error(bad.dump(), "#version: 0.2\n", "byte alphabet");
  bad = enc;
  bad["ab"] = 999;
  expect_load_error(bad.dump(), "#version: 0.2\n", "expected an integer");
}

TEST(UnicodeTables, Classes) {
  EXPECT_TRUE(is_unicode_letter(U'a'));
  EXPECT_TRUE(is_unicode_letter(U'Ж'));
  EXPECT_TRUE(is_unicode_letter(U'中'));
  EXPECT_TRUE(is_unicode_letter(0x1D538));  // mathematical double-struck A
  EXPECT_FALSE(is_unicode_letter(U'1'));
  EXPECT_FALSE(is_unicode_letter(0x301));  // combining acute: Mn
  EXPECT_FALSE(is_unicode_letter(0x10FFFF));
  EXPECT_TRUE(is_unicode_number(U'7'));
  EXPECT_TRUE(is_unicode_number(0x663));    // Arabic-Indic three
  EXPECT_TRUE(is_unicode_number(0x216B));   // Roman numeral twelve: Nl
  EXPECT_TRUE(is_unicode_number(0xBD));     // one half: No
  EXPECT_TRUE(is_unicode_number(0x1D7D8));  // mathematical double-struck zero
  EXPECT_FALSE(is_unicode_number(U'x'));
  const char32_t spaces[] = {0x9,    0xA,    0xB,    0xC,    0xD,    0x20,   0xA0,   0x1680,
                             0x2000, 0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000, 0xFEFF};
  for (const char32_t c : spaces) {
    EXPECT_TRUE(is_unicode_space(c)) << std::hex << static_cast<uint32_t>(c);
  }
  // Python counts the first three as \s; JavaScript (the reference) does not.
  const char32_t not_spaces[] = {0x1C, 0x1F, 0x85, 0x180E, 0x200B, U'a', U'0', 0x10FFFF};
  for (const char32_t c : not_spaces) {
    EXPECT_FALSE(is_unicode_space(c)) << std::hex << static_cast<uint32_t>(c);
  }
}

}  // namespace
}  // namespace quest
