// The one-field JSON reader agrees with nlohmann::json on what is valid and on the decoded text.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/rng.h"
#include "data/json_field.h"
#include "data/utf8.h"

namespace quest {
namespace {

using nlohmann::json;

JsonFieldResult extract(std::string_view line, std::string& out) {
  return extract_json_string_field(line, "text", out);
}

TEST(JsonField, DecodesTheField) {
  std::string out;
  EXPECT_EQ(extract(R"({"id": 1, "text": "a\"b\\c\/d\n\t\u00e9\ud83d\udc0b", "x": [1, {"t": null}]})", out).status,
            JsonFieldStatus::Ok);
  EXPECT_EQ(out, "a\"b\\c/d\n\t\u00e9\U0001F40B");
  EXPECT_EQ(extract(R"(  {"text":""}  )", out).status, JsonFieldStatus::Ok);
  EXPECT_EQ(out, "");
  EXPECT_EQ(extract(R"({"text": "first", "text": "last"})", out).status, JsonFieldStatus::Ok);
  EXPECT_EQ(out, "last");

  auto r = extract(R"({"title": "text"})", out);
  EXPECT_EQ(r.status, JsonFieldStatus::Missing);
  r = extract(R"({"text": [1]})", out);
  EXPECT_EQ(r.status, JsonFieldStatus::NotString);
  EXPECT_STREQ(r.type, "array");
  r = extract(R"({"text": -1.5e3})", out);
  EXPECT_STREQ(r.type, "number");
  r = extract(R"("just a string")", out);
  EXPECT_EQ(r.status, JsonFieldStatus::NotObject);
  EXPECT_STREQ(r.type, "string");
  r = extract(R"({"text": "x",})", out);
  EXPECT_EQ(r.status, JsonFieldStatus::Invalid);
  EXPECT_EQ(r.column, 14u);
  r = extract(R"({"text": "unterminated)", out);
  EXPECT_EQ(r.status, JsonFieldStatus::Invalid);
  EXPECT_NE(r.message.find("end of the line"), std::string::npos) << r.message;
  EXPECT_EQ(extract(std::string(5000, '[') + std::string(5000, ']'), out).status, JsonFieldStatus::Invalid);
}

// Random JSON values, as nlohmann writes them.
json random_value(Rng& rng, int depth) {
  switch (rng.below(depth > 3 ? 5 : 7)) {
    case 0: return nullptr;
    case 1: return rng.below(2) == 1;
    case 2: return int64_t(rng.next_u64() >> rng.below(64)) * (rng.below(2) ? 1 : -1);
    case 3: return (rng.uniform() - 0.5) * std::pow(10.0, double(rng.below(40)) - 20);
    case 4: {
      static const char* parts[] = {"a", "\"", "\\", "/", "\n", "\t", "\x01", "\u00e9", "\U0001F40B", " ", "text"};
      std::string s;
      for (uint64_t k = rng.below(8); k > 0; --k) s += parts[rng.below(std::size(parts))];
      return s;
    }
    case 5: {
      json a = json::array();
      for (uint64_t k = rng.below(4); k > 0; --k) a.push_back(random_value(rng, depth + 1));
      return a;
    }
    default: {
      json o = json::object();
      static const char* keys[] = {"text", "id", "meta", "t", "\u00e9"};
      for (uint64_t k = rng.below(4); k > 0; --k) o[keys[rng.below(std::size(keys))]] = random_value(rng, depth + 1);
      return o;
    }
  }
}

TEST(JsonField, AgreesWithNlohmannOnRandomAndMutatedLines) {
  Rng rng(11);
  static const char mutations[] = "{}[]\",:\\ 0123456789.eE+-tfnu\x01x";
  int checked = 0;
  for (int iter = 0; iter < 20000; ++iter) {
    json v = random_value(rng, 0);
    if (rng.below(2)) v = json{{"text", random_value(rng, 1)}, {"id", iter}};
    std::string line = v.dump(rng.below(4) == 0 ? 1 : -1);
    // Mutate some lines: a byte replaced, deleted or inserted.
    if (rng.below(2) && !line.empty()) {
      const size_t at = rng.below(line.size());
      const char c = mutations[rng.below(sizeof(mutations) - 1)];
      switch (rng.below(3)) {
        case 0: line[at] = c; break;
        case 1: line.erase(at, 1); break;
        default: line.insert(line.begin() + long(at), c);
      }
    }
    if (find_invalid_utf8(line) != std::string::npos) continue;  // checked before parsing
    ++checked;
    std::string out;
    const auto r = extract(line, out);
    bool valid = json::accept(line);
    if (!valid && r.status != JsonFieldStatus::Invalid) {
      // nlohmann also refuses numbers beyond double's range (e.g. 1e400), which JSON's grammar
      // allows; the reader accepts them (it never converts numbers).
      try {
        const json ignored = json::parse(line);
      } catch (const json::out_of_range&) {
        continue;
      } catch (const json::exception&) {
      }
    }
    ASSERT_EQ(r.status != JsonFieldStatus::Invalid, valid) << line << "\n" << r.message;
    if (!valid) continue;
    const json j = json::parse(line);
    if (!j.is_object()) {
      ASSERT_EQ(r.status, JsonFieldStatus::NotObject) << line;
    } else if (!j.contains("text")) {
      ASSERT_EQ(r.status, JsonFieldStatus::Missing) << line;
    } else if (!j["text"].is_string()) {
      ASSERT_EQ(r.status, JsonFieldStatus::NotString) << line;
    } else {
      ASSERT_EQ(r.status, JsonFieldStatus::Ok) << line;
      ASSERT_EQ(out, j["text"].get<std::string>()) << line;
    }
  }
  EXPECT_GT(checked, 15000);
}

}  // namespace
}  // namespace quest
