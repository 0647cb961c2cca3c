#pragma once
// Documents from corpus files: plain text (a whole file, or pieces separated by runs of blank
// lines) or JSONL (one JSON object a line, the text in a chosen field), each optionally .zst.
// Every document is checked to be valid UTF-8. Bad input is reported with file and line; with
// skip_bad it is skipped, counted and (the first few) logged as warnings instead.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace quest {

enum class InputFormat { Auto, Text, Jsonl };

// "auto" | "text" | "jsonl" (throws on anything else).
InputFormat parse_input_format(const std::string& name);
// The format of one file under `format`: Auto picks JSONL for names ending in .jsonl, .json or
// .ndjson (before an optional .zst), else plain text.
InputFormat resolve_input_format(InputFormat format, const std::string& path);

struct TextSourceOptions {
  InputFormat format = InputFormat::Auto;
  std::string text_field = "text";  // JSONL: the field holding the document
  // Plain text: 0 = each file is one document; N > 0 = a run of N or more blank (empty or
  // whitespace-only) lines separates documents. The separating lines belong to no document, nor
  // do blank lines at the start or end of a document; inside a document every byte is kept.
  int split_blank_lines = 0;
  bool skip_bad = false;
};

// The files that files, directories (recursively, hidden entries skipped) and glob patterns name,
// in order: each argument's files sorted, arguments in the order given, duplicates dropped.
// Throws when an argument names nothing.
std::vector<std::string> expand_inputs(const std::vector<std::string>& specs);

struct Document {
  std::string text;  // valid UTF-8, not empty
  std::string file;
  uint64_t line = 0;  // 1-based line where the document starts
};

// Reads the documents of a list of files in order. Documents that are empty or only whitespace
// (and blank JSONL lines) are dropped silently.
class DocumentReader {
 public:
  DocumentReader(std::vector<std::string> files, TextSourceOptions options);
  ~DocumentReader();
  DocumentReader(const DocumentReader&) = delete;
  DocumentReader& operator=(const DocumentReader&) = delete;

  // The next document into doc; false after the last one. Throws quest::Error ("FILE:LINE: what")
  // on bad input unless skip_bad; then the bad record is counted and skipped: an invalid JSON
  // line, a missing or non-string field, or invalid UTF-8 skips that record; unreadable
  // (corrupt or truncated) compressed data skips the rest of that file.
  bool next(Document& doc);

  // Bad records skipped so far (skip_bad only).
  uint64_t bad_records() const { return bad_; }
  // Bad records skipped since the last call of this function (to attribute them to a split).
  uint64_t take_new_bad_records();
  // Bytes consumed from the files so far (compressed bytes for .zst) and their total size.
  uint64_t file_bytes_read() const;
  uint64_t file_bytes_total() const { return total_bytes_; }
  // Whether skipped records are logged as warnings (on by default; off for a second pass).
  void set_warnings(bool on) { warnings_ = on; }

 private:
  class FileReader;
  void bad_record(const std::string& message);

  std::vector<std::string> files_;
  TextSourceOptions options_;
  size_t next_file_ = 0;
  std::unique_ptr<FileReader> current_;
  uint64_t bad_ = 0, bad_reported_ = 0;
  bool warnings_ = true;
  uint64_t done_bytes_ = 0, total_bytes_ = 0;  // bytes of the finished files; of all files
};

}  // namespace quest
