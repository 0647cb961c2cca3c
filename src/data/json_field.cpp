#include "data/json_field.h"

#include "data/utf8.h"

#include <fmt/format.h>

#include <cstdint>

namespace quest {

namespace {

constexpr int kMaxDepth = 1000;  // deeper nesting is refused rather than risking the stack

class Parser {
 public:
  explicit Parser(std::string_view s) : s_(s) {}

  JsonFieldResult run(std::string_view field, std::string& out) {
    JsonFieldResult r;
    skip_ws();
    if (peek() != '{') {
      const char* type = value_type();
      if (!parse_value(0)) return invalid();
      skip_ws();
      if (i_ != s_.size()) return error("unexpected character after the value");
      r.status = JsonFieldStatus::NotObject;
      r.type = type;
      return r;
    }
    bool found = false;
    const char* found_type = "";
    ++i_;  // '{'
    skip_ws();
    if (peek() == '}') {
      ++i_;
    } else {
      std::string key;
      while (true) {
        skip_ws();
        if (peek() != '"') return error("expected a string key");
        key.clear();
        if (!parse_string(&key)) return invalid();
        skip_ws();
        if (peek() != ':') return error("expected ':' after a key");
        ++i_;
        skip_ws();
        if (key == field) {
          found = true;
          found_type = value_type();
          if (peek() == '"') {
            out.clear();
            if (!parse_string(&out)) return invalid();
          } else if (!parse_value(1)) {
            return invalid();
          }
        } else if (!parse_value(1)) {
          return invalid();
        }
        skip_ws();
        if (peek() == ',') {
          ++i_;
          continue;
        }
        if (peek() == '}') {
          ++i_;
          break;
        }
        return error("expected ',' or '}' in an object");
      }
    }
    skip_ws();
    if (i_ != s_.size()) return error("unexpected character after the value");
    if (!found) {
      r.status = JsonFieldStatus::Missing;
    } else if (std::string_view(found_type) != "string") {
      r.status = JsonFieldStatus::NotString;
      r.type = found_type;
    }
    return r;
  }

 private:
  int peek() const { return i_ < s_.size() ? static_cast<unsigned char>(s_[i_]) : -1; }
  void skip_ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r'))
      ++i_;
  }

  // The type of the value starting here (by its first character).
  const char* value_type() const {
    switch (peek()) {
      case '{': return "object";
      case '[': return "array";
      case '"': return "string";
      case 't': case 'f': return "boolean";
      case 'n': return "null";
      default: return "number";
    }
  }

  bool fail(const char* what) {
    if (message_.empty()) {
      message_ = what;
      column_ = i_ + 1;
    }
    return false;
  }
  JsonFieldResult error(const char* what) {
    fail(what);
    return invalid();
  }
  JsonFieldResult invalid() {
    JsonFieldResult r;
    r.status = JsonFieldStatus::Invalid;
    r.column = column_;
    r.message = i_ >= s_.size() && message_.rfind("unexpected end", 0) != 0
                    ? message_ + " (the line ends too early)"
                    : message_;
    return r;
  }

  bool parse_value(int depth) {
    if (depth > kMaxDepth) return fail("nested too deeply");
    switch (peek()) {
      case '{': {
        ++i_;
        skip_ws();
        if (peek() == '}') return ++i_, true;
        while (true) {
          skip_ws();
          if (peek() != '"') return fail("expected a string key");
          if (!parse_string(nullptr)) return false;
          skip_ws();
          if (peek() != ':') return fail("expected ':' after a key");
          ++i_;
          skip_ws();
          if (!parse_value(depth + 1)) return false;
          skip_ws();
          if (peek() == ',') {
            ++i_;
            continue;
          }
          if (peek() == '}') return ++i_, true;
          return fail("expected ',' or '}' in an object");
        }
      }
      case '[': {
        ++i_;
        skip_ws();
        if (peek() == ']') return ++i_, true;
        while (true) {
          skip_ws();
          if (!parse_value(depth + 1)) return false;
          skip_ws();
          if (peek() == ',') {
            ++i_;
            continue;
          }
          if (peek() == ']') return ++i_, true;
          return fail("expected ',' or ']' in an array");
        }
      }
      case '"': return parse_string(nullptr);
      case 't': return literal("true");
      case 'f': return literal("false");
      case 'n': return literal("null");
      case -1: return fail("unexpected end of the line, expected a value");
      default: return parse_number();
    }
  }

  bool literal(std::string_view word) {
    if (s_.substr(i_, word.size()) != word) return fail("invalid literal");
    i_ += word.size();
    return true;
  }

  bool digits() {
    const size_t start = i_;
    while (i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9') ++i_;
    return i_ > start;
  }

  bool parse_number() {
    if (peek() == '-') ++i_;
    if (peek() == '0') {
      ++i_;
    } else if (peek() >= '1' && peek() <= '9') {
      digits();
    } else {
      return fail("unexpected character, expected a value");
    }
    if (peek() == '.') {
      ++i_;
      if (!digits()) return fail("expected a digit after the decimal point");
    }
    if (peek() == 'e' || peek() == 'E') {
      ++i_;
      if (peek() == '+' || peek() == '-') ++i_;
      if (!digits()) return fail("expected a digit in the exponent");
    }
    return true;
  }

  int hex4() {  // the 4 hex digits of a \u escape, or -1
    if (i_ + 4 > s_.size()) return -1;
    int v = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = s_[i_ + k];
      v <<= 4;
      if (c >= '0' && c <= '9') v |= c - '0';
      else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
      else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
      else return -1;
    }
    i_ += 4;
    return v;
  }


  // A string at i_ ('"'); decoded into out unless out is null.
  bool parse_string(std::string* out) {
    ++i_;
    while (true) {
      // The run of plain characters up to the next quote, backslash or control character.
      const size_t start = i_;
      while (i_ < s_.size()) {
        const auto c = static_cast<unsigned char>(s_[i_]);
        if (c == '"' || c == '\\' || c < 0x20) break;
        ++i_;
      }
      if (out) out->append(s_.data() + start, i_ - start);
      if (i_ >= s_.size()) return fail("unexpected end of the line inside a string");
      const char c = s_[i_];
      if (c == '"') return ++i_, true;
      if (c != '\\') return fail("control character in a string (must be escaped)");
      ++i_;
      if (i_ >= s_.size()) return fail("unexpected end of the line inside a string");
      const char e = s_[i_++];
      char plain = 0;
      switch (e) {
        case '"': plain = '"'; break;
        case '\\': plain = '\\'; break;
        case '/': plain = '/'; break;
        case 'b': plain = '\b'; break;
        case 'f': plain = '\f'; break;
        case 'n': plain = '\n'; break;
        case 'r': plain = '\r'; break;
        case 't': plain = '\t'; break;
        case 'u': {
          int cp = hex4();
          if (cp < 0) return fail("invalid \\u escape (needs 4 hex digits)");
          if (cp >= 0xDC00 && cp <= 0xDFFF) return fail("lone low surrogate in a \\u escape");
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (s_.substr(i_, 2) != "\\u") return fail("high surrogate without its low surrogate");
            i_ += 2;
            const int lo = hex4();
            if (lo < 0xDC00 || lo > 0xDFFF) return fail("high surrogate without its low surrogate");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          }
          if (out) append_utf8(*out, char32_t(cp));
          continue;
        }
        default: --i_; return fail("invalid escape in a string");
      }
      if (out) out->push_back(plain);
    }
  }

  std::string_view s_;
  size_t i_ = 0;
  std::string message_;
  size_t column_ = 0;
};

}  // namespace

JsonFieldResult extract_json_string_field(std::string_view line, std::string_view field,
                                          std::string& out) {
  return Parser(line).run(field, out);
}

}  // namespace quest
