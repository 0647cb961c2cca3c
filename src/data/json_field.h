#pragma once
// One string field out of a one-line JSON object, with the whole line checked to be valid JSON
// (RFC 8259). A general JSON library builds the whole document character by character; corpora
// like C4 or Gutenberg JSONL are mostly one long string, so this scans strings in runs and decodes
// only the field asked for, several times faster.
#include <cstddef>
#include <string>
#include <string_view>

namespace quest {

enum class JsonFieldStatus {
  Ok,         // out holds the decoded field
  Invalid,    // not valid JSON: message says why, column where (1-based)
  NotObject,  // valid JSON, but not an object: type says what it is
  Missing,    // an object without the field
  NotString,  // the field is there but not a string: type says what it is
};

struct JsonFieldResult {
  JsonFieldStatus status = JsonFieldStatus::Ok;
  std::string message;
  size_t column = 0;
  const char* type = "";  // "object", "array", "string", "number", "boolean" or "null"
};

// Decodes the string `field` of the object on `line` into out (the last one if the key repeats).
// The line is assumed to be valid UTF-8 (checked separately).
JsonFieldResult extract_json_string_field(std::string_view line, std::string_view field,
                                          std::string& out);

}  // namespace quest
