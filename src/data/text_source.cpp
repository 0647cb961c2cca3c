#include "data/text_source.h"

#include <glob.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <set>

#include "core/error.h"
#include "core/log.h"
#include "data/input_stream.h"
#include "data/json_field.h"
#include "data/utf8.h"

namespace quest {

namespace fs = std::filesystem;

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool is_blank(std::string_view text) {
  return text.find_first_not_of(" \t\r\n\f\v") == std::string_view::npos;
}

// 1-based line of byte `offset` in a text starting at line `first_line`.
uint64_t line_of(std::string_view text, size_t offset, uint64_t first_line) {
  return first_line + uint64_t(std::count(text.begin(), text.begin() + offset, '\n'));
}

const char* article(std::string_view noun) {
  return noun == "array" || noun == "object" ? "an" : "a";
}

constexpr uint64_t kMaxBadReported = 10;  // warnings shown with skip_bad; the rest only counted

// Lines of a stream, each without its '\n'; `terminated` says whether it had one.
class LineReader {
 public:
  explicit LineReader(std::unique_ptr<InputStream> in) : in_(std::move(in)), buf_(1 << 20) {}

  bool next(std::string_view& line, bool& terminated) {
    if (!read_line(line, terminated)) return false;
    // A UTF-8 byte order mark marks the file's encoding; it is not text.
    if (line_no_ == 1 && line.substr(0, 3) == "\xEF\xBB\xBF") line.remove_prefix(3);
    return true;
  }
  uint64_t line_no() const { return line_no_; }  // of the last line returned
  const InputStream& stream() const { return *in_; }

 private:
  bool read_line(std::string_view& line, bool& terminated) {
    carry_.clear();
    while (true) {
      if (pos_ == end_) {
        end_ = in_->read(buf_.data(), buf_.size());
        pos_ = 0;
        if (end_ == 0) {
          if (carry_.empty()) return false;
          line = carry_;
          terminated = false;
          ++line_no_;
          return true;
        }
      }
      const char* start = buf_.data() + pos_;
      const auto* nl = static_cast<const char*>(std::memchr(start, '\n', end_ - pos_));
      if (!nl) {
        carry_.append(start, end_ - pos_);
        pos_ = end_;
        continue;
      }
      pos_ = size_t(nl - buf_.data()) + 1;
      terminated = true;
      ++line_no_;
      if (carry_.empty()) {
        line = std::string_view(start, size_t(nl - start));
      } else {
        carry_.append(start, size_t(nl - start));
        line = carry_;
      }
      return true;
    }
  }

  std::unique_ptr<InputStream> in_;
  std::vector<char> buf_;
  size_t pos_ = 0, end_ = 0;
  std::string carry_;
  uint64_t line_no_ = 0;
};

}  // namespace

InputFormat parse_input_format(const std::string& name) {
  if (name == "auto") return InputFormat::Auto;
  if (name == "text") return InputFormat::Text;
  if (name == "jsonl") return InputFormat::Jsonl;
  fail("unknown input format '{}' (expected auto, text or jsonl)", name);
}

InputFormat resolve_input_format(InputFormat format, const std::string& path) {
  if (format != InputFormat::Auto) return format;
  std::string name = path;
  if (is_zstd_path(name)) name.resize(name.size() - 4);
  for (const char* ext : {".jsonl", ".json", ".ndjson"})
    if (ends_with(name, ext)) return InputFormat::Jsonl;
  return InputFormat::Text;
}

std::vector<std::string> expand_inputs(const std::vector<std::string>& specs) {
  std::vector<std::string> out;
  std::set<std::string> seen;
  for (const auto& spec : specs) {
    std::vector<std::string> found;
    std::error_code ec;
    if (fs::is_directory(spec, ec)) {
      for (auto it = fs::recursive_directory_iterator(spec, ec); !ec && it != fs::end(it);
           it.increment(ec)) {
        const std::string name = it->path().filename().string();
        if (!name.empty() && name[0] == '.') {  // hidden files and folders
          if (it->is_directory()) it.disable_recursion_pending();
          continue;
        }
        if (it->is_regular_file()) found.push_back(it->path().string());
      }
      QUEST_CHECK(!ec, "cannot list directory '{}': {}", spec, ec.message());
      QUEST_CHECK(!found.empty(), "input directory '{}' holds no files", spec);
    } else if (fs::exists(spec, ec)) {
      found.push_back(spec);
    } else if (spec.find_first_of("*?[") != std::string::npos) {
      glob_t g{};
      if (::glob(spec.c_str(), 0, nullptr, &g) == 0)
        for (size_t i = 0; i < g.gl_pathc; ++i)
          if (fs::is_regular_file(g.gl_pathv[i], ec)) found.emplace_back(g.gl_pathv[i]);
      ::globfree(&g);
      QUEST_CHECK(!found.empty(), "no input files match '{}'", spec);
    } else {
      fail("input '{}' does not exist", spec);
    }
    std::sort(found.begin(), found.end());
    for (auto& f : found)
      if (seen.insert(f).second) out.push_back(std::move(f));
  }
  return out;
}

// One file's documents.
class DocumentReader::FileReader {
 public:
  FileReader(const std::string& path, const TextSourceOptions& options, DocumentReader& owner)
      : path_(path), options_(options), owner_(owner),
        format_(resolve_input_format(options.format, path)),
        lines_(open_input_stream(path)) {}

  uint64_t file_bytes_read() const { return lines_.stream().file_bytes_read(); }

  // False at the end of the file (or when the rest of it is unreadable and skipped).
  bool next(Document& doc) {
    while (!done_) {
      doc.file = path_;
      bool got;
      if (format_ == InputFormat::Jsonl) got = next_jsonl(doc);
      else if (options_.split_blank_lines > 0) got = next_text_piece(doc);
      else got = next_text_file(doc);
      // Empty: a bad document, already counted. Whitespace only: no document either.
      if (got && !is_blank(doc.text)) return true;
    }
    return false;
  }

 private:
  // A record-level problem: thrown, or counted and skipped.
  void bad(uint64_t line, const std::string& what) {
    owner_.bad_record(fmt::format("{}:{}: {}", path_, line, what));
  }

  // Reads a line. A stream failure (corrupt or truncated zstd, read error) ends the file: it is
  // thrown, or counted while the complete lines before it are kept.
  bool read_line(std::string_view& line, bool& terminated) {
    try {
      return lines_.next(line, terminated);
    } catch (const Error& e) {
      done_ = stream_failed_ = true;
      std::string what = e.what();
      const std::string prefix = "'" + path_ + "': ";  // the file is named once, in front
      if (what.rfind(prefix, 0) == 0) what = what.substr(prefix.size());
      bad(lines_.line_no() + 1, what);
      return false;
    }
  }

  bool next_jsonl(Document& doc) {
    std::string_view line;
    bool terminated;
    while (read_line(line, terminated)) {
      const uint64_t n = lines_.line_no();
      if (is_blank(line)) continue;
      // Checked first so that a bad byte is reported as such, not as a JSON syntax error.
      if (const size_t at = find_invalid_utf8(line); at != std::string_view::npos) {
        bad(n, fmt::format("invalid UTF-8: byte 0x{:02x} at column {}", uint8_t(line[at]), at + 1));
        continue;
      }
      const JsonFieldResult r = extract_json_string_field(line, options_.text_field, doc.text);
      switch (r.status) {
        case JsonFieldStatus::Ok: break;
        case JsonFieldStatus::Invalid:
          bad(n, fmt::format("invalid JSON at column {}: {}", r.column, r.message));
          continue;
        case JsonFieldStatus::NotObject:
          bad(n, fmt::format("expected a JSON object, got {} {}", article(r.type), r.type));
          continue;
        case JsonFieldStatus::Missing:
          bad(n, fmt::format("missing field \"{}\"", options_.text_field));
          continue;
        case JsonFieldStatus::NotString:
          bad(n, fmt::format("field \"{}\" is {} {}, not a string", options_.text_field,
                             article(r.type), r.type));
          continue;
      }
      doc.line = n;
      if (doc.text.empty() || !valid_utf8(doc)) continue;  // \u escapes can add bad text
      return true;
    }
    done_ = true;
    return false;
  }

  // The whole file is one document.
  bool next_text_file(Document& doc) {
    done_ = true;
    doc.text.clear();
    doc.line = 1;
    std::string_view line;
    bool terminated;
    while (read_line(line, terminated)) {
      doc.text.append(line);
      if (terminated) doc.text.push_back('\n');
    }
    if (stream_failed_ || !valid_utf8(doc)) doc.text.clear();  // a partial document is no document
    return true;
  }

  // Documents separated by runs of >= split_blank_lines blank lines. The document in progress
  // lives in cur_ across calls: it is finished only when the first line of the next one is read.
  bool next_text_piece(Document& doc) {
    const uint64_t need = uint64_t(options_.split_blank_lines);
    std::string_view line;
    bool terminated;
    while (read_line(line, terminated)) {
      if (is_blank(line)) {
        ++blanks_;
        if (!cur_.empty()) {
          pending_.append(line);
          if (terminated) pending_.push_back('\n');
        }
        continue;
      }
      const bool boundary = !cur_.empty() && blanks_ >= need;
      if (boundary) {
        doc.text = std::move(cur_);
        doc.line = cur_line_;
        cur_.clear();
      } else if (!cur_.empty()) {
        cur_ += pending_;  // a shorter run of blank lines stays inside the document
      }
      if (cur_.empty()) cur_line_ = lines_.line_no();
      pending_.clear();
      blanks_ = 0;
      cur_.append(line);
      if (terminated) cur_.push_back('\n');
      if (boundary) {
        if (!valid_utf8(doc)) doc.text.clear();
        return true;
      }
    }
    done_ = true;
    doc.text.clear();
    if (!stream_failed_ && !cur_.empty()) {  // an unreadable rest drops the partial document
      doc.text = std::move(cur_);
      doc.line = cur_line_;
      if (!valid_utf8(doc)) doc.text.clear();
    }
    cur_.clear();
    return true;
  }

  // Invalid UTF-8 makes the document bad (reported with the line and column of the first bad byte).
  bool valid_utf8(const Document& doc) {
    const size_t at = find_invalid_utf8(doc.text);
    if (at == std::string::npos) return true;
    const size_t nl = at == 0 ? std::string::npos : doc.text.rfind('\n', at - 1);
    const size_t column = nl == std::string::npos ? at + 1 : at - nl;
    bad(line_of(doc.text, at, doc.line),
        fmt::format("invalid UTF-8: byte 0x{:02x} at column {}", uint8_t(doc.text[at]), column));
    return false;
  }

  std::string path_;
  const TextSourceOptions& options_;
  DocumentReader& owner_;
  InputFormat format_;
  LineReader lines_;
  bool done_ = false, stream_failed_ = false;
  std::string cur_, pending_;  // split mode: the document in progress; blank lines after it
  uint64_t cur_line_ = 0, blanks_ = 0;
};

DocumentReader::DocumentReader(std::vector<std::string> files, TextSourceOptions options)
    : files_(std::move(files)), options_(std::move(options)) {
  QUEST_CHECK(options_.split_blank_lines >= 0, "the blank-line count must be >= 0, got {}",
              options_.split_blank_lines);
  for (const auto& f : files_) {
    std::error_code ec;
    const auto size = fs::file_size(f, ec);
    QUEST_CHECK(!ec, "cannot read '{}': {}", f, ec.message());
    total_bytes_ += size;
  }
}

DocumentReader::~DocumentReader() = default;

bool DocumentReader::next(Document& doc) {
  while (true) {
    if (!current_) {
      if (next_file_ == files_.size()) return false;
      current_ = std::make_unique<FileReader>(files_[next_file_++], options_, *this);
    }
    if (current_->next(doc)) return true;
    done_bytes_ += current_->file_bytes_read();
    current_.reset();
  }
}

void DocumentReader::bad_record(const std::string& message) {
  if (!options_.skip_bad) throw Error(message);
  ++bad_;
  if (!warnings_) return;
  if (bad_ <= kMaxBadReported) log_warning("skipped: {}", message);
  if (bad_ == kMaxBadReported) log_warning("further bad records are skipped without a message");
}

uint64_t DocumentReader::take_new_bad_records() {
  const uint64_t n = bad_ - bad_reported_;
  bad_reported_ = bad_;
  return n;
}

uint64_t DocumentReader::file_bytes_read() const {
  return done_bytes_ + (current_ ? current_->file_bytes_read() : 0);
}

}  // namespace quest
