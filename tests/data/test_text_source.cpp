// Reading documents: JSONL and plain text (whole files or split at blank-line runs), zstd
// streaming, input expansion, UTF-8 checks and the messages for bad input.
#include <gtest/gtest.h>

#include "core/error.h"
#include "core/log.h"
#include "core/rng.h"
#include "data/corpus_files.h"
#include "data/input_stream.h"
#include "data/temp_dir.h"
#include "data/text_source.h"
#include "data/utf8.h"

namespace quest {
namespace {

using test::TempDir;

std::vector<Document> read_all(const std::vector<std::string>& files, TextSourceOptions opt = {},
                               uint64_t* bad = nullptr) {
  set_log_sink([](LogLevel, std::string_view) {});  // skipped-record warnings are expected here
  DocumentReader reader(files, opt);
  std::vector<Document> docs;
  Document d;
  while (reader.next(d)) docs.push_back(d);
  if (bad) *bad = reader.bad_records();
  set_log_sink(nullptr);
  return docs;
}

std::vector<std::string> texts(const std::vector<Document>& docs) {
  std::vector<std::string> t;
  for (const auto& d : docs) t.push_back(d.text);
  return t;
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

TEST(Utf8, Validation) {
  EXPECT_EQ(find_invalid_utf8("plain ascii text, long enough for the fast path"), std::string::npos);
  EXPECT_EQ(find_invalid_utf8("caf\xc3\xa9 \xe2\x80\x94 \xf0\x9f\x90\x8b"), std::string::npos);
  EXPECT_EQ(find_invalid_utf8("abcdefghij\xff"), 10u);
  EXPECT_EQ(find_invalid_utf8("ab\xc3"), 2u);                   // cut short
  EXPECT_EQ(find_invalid_utf8("\xc0\xaf"), 0u);                 // overlong
  EXPECT_EQ(find_invalid_utf8("x\xed\xa0\x80"), 1u);            // surrogate
  EXPECT_EQ(find_invalid_utf8("\xf4\x90\x80\x80"), 0u);         // above U+10FFFF
  EXPECT_EQ(find_invalid_utf8("\xe2\x28\xa1"), 0u);             // bad continuation
}

TEST(TextSource, JsonlDocumentsWithLines) {
  TempDir dir;
  const auto f = dir.write("a.jsonl", test::jsonl_line(0, "first doc\nline two") + "\n   \n" +
                                          test::jsonl_line(1, " \n\t") +  // blank: dropped
                                          test::jsonl_line(2, "caf\u00e9 \U0001F40B"));
  const auto docs = read_all({f});
  ASSERT_EQ(docs.size(), 2u);
  EXPECT_EQ(docs[0].text, "first doc\nline two");
  EXPECT_EQ(docs[0].line, 1u);
  EXPECT_EQ(docs[1].text, "caf\u00e9 \U0001F40B");
  EXPECT_EQ(docs[1].line, 5u);
  EXPECT_EQ(docs[1].file, f);

  // A byte order mark is not part of the text.
  const auto bom = dir.write("bom.jsonl", "\xEF\xBB\xBF" + test::jsonl_line(0, "x"));
  EXPECT_EQ(texts(read_all({bom})), std::vector<std::string>{"x"});
  const auto bom_txt = dir.write("bom.txt", "\xEF\xBB\xBFtext\n");
  EXPECT_EQ(texts(read_all({bom_txt})), std::vector<std::string>{"text\n"});

  TextSourceOptions opt;
  opt.text_field = "body";
  const auto g = dir.write("b.jsonl", R"({"body": "x", "text": "y"})" "\n");
  EXPECT_EQ(texts(read_all({g}, opt)), std::vector<std::string>{"x"});
}

TEST(TextSource, PlainTextWholeFileAndSplitAtBlankLines) {
  TempDir dir;
  const std::string text =
      "\n\nChapter 1\npara a\n\npara b\n\n\n\n\nChapter 2\n  \t\n\r\npara c\n \n\n\n \nChapter 3"
      "\nno newline at the end";
  const auto f = dir.write("book.txt", text);
  EXPECT_EQ(texts(read_all({f})), std::vector<std::string>{text});  // one file = one document

  TextSourceOptions opt;
  opt.split_blank_lines = 3;
  const auto docs = read_all({f}, opt);
  ASSERT_EQ(docs.size(), 3u);
  EXPECT_EQ(docs[0].text, "Chapter 1\npara a\n\npara b\n");
  EXPECT_EQ(docs[0].line, 3u);
  EXPECT_EQ(docs[1].text, "Chapter 2\n  \t\n\r\npara c\n");  // 2 blank lines stay inside
  EXPECT_EQ(docs[1].line, 11u);
  EXPECT_EQ(docs[2].text, "Chapter 3\nno newline at the end");
  EXPECT_EQ(docs[2].line, 19u);

  opt.split_blank_lines = 1;
  EXPECT_EQ(read_all({f}, opt).size(), 5u);
}

TEST(TextSource, ZstdStreamsAndMatchesPlain) {
  TempDir dir;
  Rng rng(3);
  std::vector<std::string> docs;
  for (int i = 0; i < 300; ++i) {  // ~1.5 MB: several decompression buffers
    std::string d;
    for (int k = 0; k < 500; ++k) d += "word" + std::to_string(rng.below(1000)) + (k % 17 ? " " : "\n");
    docs.push_back(d);
  }
  const auto plain = dir.write("c.jsonl", test::jsonl(docs));
  const auto zst = dir.write("c.jsonl.zst", test::zstd_compress(test::jsonl(docs)));
  EXPECT_EQ(texts(read_all({zst})), docs);
  EXPECT_EQ(texts(read_all({plain})), docs);
  // Concatenated frames are one stream.
  const auto two = dir.write("two.txt.zst", test::zstd_compress("abc\n") + test::zstd_compress("def"));
  EXPECT_EQ(texts(read_all({two})), std::vector<std::string>{"abc\ndef"});
  const auto empty = dir.write("empty.txt.zst", "");
  EXPECT_TRUE(read_all({empty}).empty());
}

TEST(TextSource, TruncatedAndCorruptZstd) {
  TempDir dir;
  std::vector<std::string> docs(200, std::string(2000, 'a'));
  for (size_t i = 0; i < docs.size(); ++i) docs[i] += std::to_string(i * 7919);
  const std::string z = test::zstd_compress(test::jsonl(docs), /*checksum=*/true);
  const auto cut = dir.write("cut.jsonl.zst", z.substr(0, z.size() * 2 / 3));
  auto msg = error_of([&] { read_all({cut}); });
  EXPECT_CONTAINS(msg, cut + ":");
  EXPECT_CONTAINS(msg, "truncated zstd data");

  std::string bad = z;
  bad[bad.size() / 2] ^= 0x55;
  bad[bad.size() / 2 + 1] ^= 0x55;
  const auto corrupt = dir.write("corrupt.jsonl.zst", bad);
  msg = error_of([&] { read_all({corrupt}); });
  EXPECT_CONTAINS(msg, corrupt + ":");
  EXPECT_CONTAINS(msg, "corrupt zstd data");

  const auto notzstd = dir.write("plain.txt.zst", "this is not compressed");
  msg = error_of([&] { read_all({notzstd}); });
  EXPECT_CONTAINS(msg, "corrupt zstd data");

  // With skip_bad: the complete records before the damage are kept, the rest of the file counted
  // as one bad record, and the next file is read.
  TextSourceOptions opt;
  opt.skip_bad = true;
  const auto ok = dir.write("ok.jsonl", test::jsonl({"after"}));
  uint64_t nbad = 0;
  const auto got = read_all({cut, ok}, opt, &nbad);
  EXPECT_EQ(nbad, 1u);
  ASSERT_GE(got.size(), 2u);
  EXPECT_LT(got.size(), docs.size());
  for (size_t i = 0; i + 1 < got.size(); ++i) EXPECT_EQ(got[i].text, docs[i]);
  EXPECT_EQ(got.back().text, "after");
}

TEST(TextSource, BadRecordsNamedWithFileAndLine) {
  TempDir dir;
  const auto j = dir.write("bad.jsonl", test::jsonl_line(0, "good") + "{\"text\": \"oops\"\n" +
                                            R"({"title": "no text"})" "\n" +
                                            R"({"text": 42})" "\n" + "[1, 2]\n" +
                                            "{\"text\": \"bad \xff byte\"}\n" +
                                            test::jsonl_line(6, "also good"));
  auto msg = error_of([&] { read_all({j}); });
  EXPECT_CONTAINS(msg, j + ":2: invalid JSON");

  TextSourceOptions opt;
  opt.skip_bad = true;
  uint64_t nbad = 0;
  EXPECT_EQ(texts(read_all({j}, opt, &nbad)), (std::vector<std::string>{"good", "also good"}));
  EXPECT_EQ(nbad, 5u);

  // Each kind on its own, without skip_bad.
  const auto missing = dir.write("m.jsonl", test::jsonl_line(0, "x") + R"({"title": "t"})" "\n");
  EXPECT_CONTAINS(error_of([&] { read_all({missing}); }), missing + ":2: missing field \"text\"");
  const auto number = dir.write("n.jsonl", R"({"text": 42})" "\n");
  EXPECT_CONTAINS(error_of([&] { read_all({number}); }), ":1: field \"text\" is a number, not a string");
  const auto arr = dir.write("arr.jsonl", "[1]\n");
  EXPECT_CONTAINS(error_of([&] { read_all({arr}); }), ":1: expected a JSON object, got an array");

  const auto txt = dir.write("bad.txt", "line one\nline two\nline \xc3\x28three\n");
  msg = error_of([&] { read_all({txt}); });
  EXPECT_CONTAINS(msg, txt + ":3: invalid UTF-8: byte 0xc3 at column 6");
  // Split mode: the line is counted from the file's start.
  opt = {};
  opt.split_blank_lines = 2;
  const auto txt2 = dir.write("bad2.txt", "a\n\n\nb\nb2 \xff\n\n\nc\n");
  EXPECT_CONTAINS(error_of([&] { read_all({txt2}, opt); }), txt2 + ":5: invalid UTF-8");
  opt.skip_bad = true;
  EXPECT_EQ(texts(read_all({txt2}, opt, &nbad)), (std::vector<std::string>{"a\n", "c\n"}));
  EXPECT_EQ(nbad, 1u);
}

TEST(TextSource, ExpandInputs) {
  TempDir dir;
  std::filesystem::create_directories(dir / "sub/deeper");
  std::filesystem::create_directories(dir / ".hidden");
  dir.write("sub/b.txt", "b");
  dir.write("sub/a.txt", "a");
  dir.write("sub/deeper/c.jsonl", "{}");
  dir.write("sub/.secret", "s");
  dir.write(".hidden/h.txt", "h");
  dir.write("x.txt", "x");
  const auto files = expand_inputs({dir / "sub", dir / "*.txt", dir / "sub/a.txt"});
  EXPECT_EQ(files, (std::vector<std::string>{dir / "sub/a.txt", dir / "sub/b.txt",
                                             dir / "sub/deeper/c.jsonl", dir / "x.txt"}));
  EXPECT_CONTAINS(error_of([&] { expand_inputs({dir / "nope.txt"}); }), "does not exist");
  EXPECT_CONTAINS(error_of([&] { expand_inputs({dir / "*.md"}); }), "no input files match");
  std::filesystem::create_directories(dir / "empty");
  EXPECT_CONTAINS(error_of([&] { expand_inputs({dir / "empty"}); }), "holds no files");

  EXPECT_EQ(resolve_input_format(InputFormat::Auto, "a.jsonl.zst"), InputFormat::Jsonl);
  EXPECT_EQ(resolve_input_format(InputFormat::Auto, "a.json"), InputFormat::Jsonl);
  EXPECT_EQ(resolve_input_format(InputFormat::Auto, "a.txt.zst"), InputFormat::Text);
  EXPECT_EQ(resolve_input_format(InputFormat::Text, "a.jsonl"), InputFormat::Text);
}

}  // namespace
}  // namespace quest
