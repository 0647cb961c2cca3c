#include "eval/hellaswag_data.h"

#include <cctype>
#include <cstring>
#include <memory>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "data/input_stream.h"

namespace quest {

namespace {

std::string_view strip(std::string_view s) {
  // Python's str.strip(): ASCII whitespace (and the other Unicode spaces, which HellaSwag lacks).
  auto space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; };
  while (!s.empty() && space(s.front())) s.remove_prefix(1);
  while (!s.empty() && space(s.back())) s.remove_suffix(1);
  return s;
}

std::string replace_all(std::string_view s, std::string_view from, std::string_view to) {
  std::string out;
  size_t pos = 0;
  while (true) {
    const size_t hit = s.find(from, pos);
    if (hit == std::string_view::npos) break;
    out.append(s.substr(pos, hit - pos)).append(to);
    pos = hit + from.size();
  }
  return out.append(s.substr(pos));
}

// re.sub(r"\[.*?\]", "", s): each '[' up to the next ']' goes (. does not match a newline).
std::string drop_brackets(std::string_view s) {
  std::string out;
  size_t i = 0;
  while (i < s.size()) {
    if (s[i] == '[') {
      const size_t close = s.find_first_of("]\n", i + 1);
      if (close != std::string_view::npos && s[close] == ']') {
        i = close + 1;
        continue;
      }
    }
    out += s[i++];
  }
  return out;
}

// Lines of a (possibly compressed) file, one at a time.
class LineReader {
 public:
  explicit LineReader(const std::string& path) : in_(open_input_stream(path)) {}
  bool next(std::string& line) {
    line.clear();
    while (true) {
      if (pos_ == end_) {
        end_ = in_->read(buf_, sizeof buf_);
        pos_ = 0;
        if (end_ == 0) return !line.empty();
      }
      const char* nl = static_cast<const char*>(std::memchr(buf_ + pos_, '\n', end_ - pos_));
      const size_t stop = nl ? size_t(nl - buf_) : end_;
      line.append(buf_ + pos_, stop - pos_);
      pos_ = stop;
      if (nl) {
        ++pos_;
        return true;
      }
    }
  }

 private:
  std::unique_ptr<InputStream> in_;
  char buf_[1 << 16];
  size_t pos_ = 0, end_ = 0;
};

}  // namespace

std::string hellaswag_preprocess(std::string_view text) {
  std::string s = replace_all(strip(text), " [title]", ". ");
  s = drop_brackets(s);
  return replace_all(s, "  ", " ");
}

std::string capitalize_ascii(std::string_view text) {
  std::string s(text);
  for (size_t i = 0; i < s.size(); ++i)
    s[i] = char(i == 0 ? std::toupper(static_cast<unsigned char>(s[i])) : std::tolower(static_cast<unsigned char>(s[i])));
  return s;
}

std::vector<HellaswagItem> read_hellaswag(const std::string& path, int64_t limit) {
  LineReader reader(path);
  std::vector<HellaswagItem> items;
  std::string line;
  uint64_t number = 0;
  while ((limit <= 0 || int64_t(items.size()) < limit) && reader.next(line)) {
    ++number;
    if (strip(line).empty()) continue;
    const std::string where = fmt::format("{}:{}", path, number);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      fail("{}: not a JSON line: {}", where, e.what());
    }
    QUEST_CHECK(j.is_object(), "{}: expected a JSON object", where);
    auto text = [&](const char* key) -> std::string {
      QUEST_CHECK(j.contains(key) && j[key].is_string(), "{}: field '{}' is missing or not a string", where, key);
      return j[key].get<std::string>();
    };
    HellaswagItem item;
    item.line = number;
    if (j.contains("ctx_a") && j.contains("ctx_b") && j.contains("activity_label"))
      item.context = hellaswag_preprocess(text("activity_label") + ": " + text("ctx_a") + " " +
                                          capitalize_ascii(text("ctx_b")));
    else
      item.context = hellaswag_preprocess(text("ctx"));
    QUEST_CHECK(j.contains("endings") && j["endings"].is_array() && j["endings"].size() >= 2,
                "{}: field 'endings' must be an array of at least 2 strings", where);
    for (const auto& e : j["endings"]) {
      QUEST_CHECK(e.is_string(), "{}: an ending is not a string", where);
      item.endings.push_back(hellaswag_preprocess(e.get<std::string>()));
    }
    QUEST_CHECK(j.contains("label"), "{}: field 'label' is missing", where);
    const auto& label = j["label"];
    if (label.is_number_integer()) {
      item.label = label.get<int>();
    } else {
      QUEST_CHECK(label.is_string(), "{}: field 'label' must be an integer", where);
      try {
        size_t used = 0;
        item.label = std::stoi(label.get<std::string>(), &used);
        QUEST_CHECK(used == label.get<std::string>().size(), "{}: label '{}' is not an integer", where,
                    label.get<std::string>());
      } catch (const std::logic_error&) {
        fail("{}: label '{}' is not an integer", where, label.get<std::string>());
      }
    }
    QUEST_CHECK(item.label >= 0 && item.label < int(item.endings.size()),
                "{}: label {} out of range for {} endings", where, item.label, item.endings.size());
    items.push_back(std::move(item));
  }
  QUEST_CHECK(!items.empty(), "'{}' holds no HellaSwag items", path);
  return items;
}

}  // namespace quest
