#include "data/text_source.h"

#include <glob.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "core/log.h"
#include "data/input_stream.h"
#include "data/utf8.h"

namespace quest {

namespace fs = std::filesystem;

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool is_blank(std::string_view line) {
  return line.find_first_not_of(" \t\r\f\v") == std::string_view::npos;
}

// 1-based line of byte `offset` in a text starting at line `first_line`.
uint64_t line_of(std::string_view text, size_t offset, uint64_t first_line) {
  return first_line + uint64_t(std::count(text.begin(), text.begin() + offset, '\n'));
}

// nlohmann's messages start with "[json.exception.parse_error.101] parse error at line 1, column
// 7: ..."; the line is always 1 here (one record a line), so keep only the column and the reason.
std::string json_reason(const nlohmann::json::exception& e) {
  std::string m = e.what();
  if (const auto p = m.find("] "); p != std::string::npos) m = m.substr(p + 2);
  if (const auto p = m.find("at line 1, column"); p != std::string::npos) m.replace(p, 17, "at column");
  return m;
}

constexpr uint64_t kMaxBadReported = 10;  // warnings shown with skip_bad; the rest only counted

// Lines of a stream, each without its '\n'; `terminated` says whether it had one.
class LineReader {
 public:
  explicit LineReader(std::unique_ptr<InputStream> in) : in_(std::move(in)), buf_(1 << 20) {}

  bool next(std::string_view& line, bool& terminated) {
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
  uint64_t line_no() const { return line_no_; }  // of the last line returned
  const InputStream& stream() const { return *in_; }

 private:
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
      bool got = false;
      try {
        if (format_ == InputFormat::Jsonl) got = next_jsonl(doc);
        else if (options_.split_blank_lines > 0) got = next_text_piece(doc);
        else got = next_text_file(doc);
      } catch (const StreamError&) {
        throw;
      }
      if (!got) return false;
      if (!doc.text.empty()) return true;
    }
    return false;
  }

 private:
  struct StreamError {};

  // A record-level problem: thrown, or counted and skipped.
  void bad(uint64_t line, const std::string& what) {
    owner_.bad_record(fmt::format("{}:{}: {}", path_, line, what));
  }

  // Reads a line; a stream failure (corrupt/truncated zstd, read error) ends the file: thrown,
  // or counted with what was read of the file kept.
  bool read_line(std::string_view& line, bool& terminated) {
    try {
      return lines_.next(line, terminated);
    } catch (const Error& e) {
      done_ = true;
      owner_.bad_record(fmt::format("{}:{}: {}", path_, lines_.line_no() + 1, e.what()));
      return false;
    }
  }

  bool next_jsonl(Document& doc) {
    std::string_view line;
    bool terminated;
    while (read_line(line, terminated)) {
      const uint64_t n = lines_.line_no();
      if (is_blank(line)) continue;
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(line);
      } catch (const nlohmann::json::exception& e) {
        bad(n, "invalid JSON: " + json_reason(e));
        continue;
      }
      if (!j.is_object()) {
        bad(n, fmt::format("expected a JSON object, got {}", j.type_name()));
        continue;
      }
      const auto it = j.find(options_.text_field);
      if (it == j.end()) {
        bad(n, fmt::format("missing field \"{}\"", options_.text_field));
        continue;
      }
      if (!it->is_string()) {
        bad(n, fmt::format("field \"{}\" is a {}, not a string", options_.text_field,
                           it->type_name()));
        continue;
      }
      doc.text = std::move(it->get_ref<std::string&>());
      doc.file = path_;
      doc.line = n;
      if (!check_utf8(doc)) continue;
      return true;
    }
    done_ = true;
    return false;
  }

  bool next_text_file(Document& doc) {
    done_ = true;
    doc.text.clear();
    std::string_view line;
    bool terminated;
    uint64_t lines = 0;
    while (read_line(line, terminated)) {
      doc.text.append(line);
      if (terminated) doc.text.push_back('\n');
      ++lines;
    }
    if (lines_.line_no() != lines) return false;  // unreachable; keeps the intent explicit
    doc.file = path_;
    doc.line = 1;
    // A read failure inside the file makes the whole (single) document bad.
    if (stream_failed_) return false;
    return check_utf8(doc) || (doc.text.clear(), true);
  }

  bool next_text_piece(Document& doc) {
    doc.text.clear();
    doc.file = path_;
    uint64_t blanks = 0;       // blank lines seen since the last non-blank line
    std::string pending;       // those lines, kept in case the document goes on
    std::string_view line;
    bool terminated;
    while (read_line(line, terminated)) {
      if (is_blank(line)) {
        ++blanks;
        if (!doc.text.empty()) {
          pending.append(line);
          if (terminated) pending.push_back('\n');
        }
        continue;
      }
      if (!doc.text.empty() && blanks >= uint64_t(options_.split_blank_lines)) {
        // This line starts the next document: push it back by keeping it for the next call.
        held_line_.assign(line);
        held_terminated_ = terminated;
        held_no_ = lines_.line_no();
        has_held_ = true;
        return finish_piece(doc);
      }
      if (doc.text.empty()) {
        doc.line = lines_.line_no();
      } else {
        doc.text += pending;
      }
      pending.clear();
      blanks = 0;
      doc.text.append(line);
      if (terminated) doc.text.push_back('\n');
      if (has_held_) break;  // never: held lines are consumed in read_piece_start()
    }
    if (done_ && doc.text.empty()) return false;
    done_ = true;
    return finish_piece(doc);
  }

  bool finish_piece(Document& doc) { return check_utf8(doc) || (doc.text.clear(), true); }

  // Invalid UTF-8 makes the document bad.
  bool check_utf8(Document& doc) {
    const size_t at = find_invalid_utf8(doc.text);
    if (at == std::string::npos) return true;
    const uint64_t line = line_of(doc.text, at, doc.line);
    const size_t line_start = doc.text.rfind('\n', at == 0 ? 0 : at - 1);
    const size_t column = line_start == std::string::npos || at == 0 ? at + 1 : at - line_start;
    bad(line, fmt::format("invalid UTF-8 (byte 0x{:02x} at column {})",
                          uint8_t(doc.text[at]), column));
    return false;
  }

  std::string path_;
  const TextSourceOptions& options_;
  DocumentReader& owner_;
  InputFormat format_;
  LineReader lines_;
  bool done_ = false, stream_failed_ = false;
  std::string held_line_;
  bool held_terminated_ = false, has_held_ = false;
  uint64_t held_no_ = 0;
};

}  // namespace quest
