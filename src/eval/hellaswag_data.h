#pragma once
// HellaSwag items from JSONL (optionally .zst), with lm-eval-harness's preprocessing so that
// accuracies compare with its numbers:
// - context: when a line has activity_label, ctx_a and ctx_b (the original data and the Hugging
//   Face dataset), activity_label + ": " + ctx_a + " " + capitalize(ctx_b), as lm-eval builds it;
//   otherwise the line's "ctx" as given (the shared hellaswag_val.jsonl.zst already holds
//   "activity_label: ctx_a ctx_b", with ctx_b not capitalized, so its contexts differ from lm-eval's
//   by that one letter's case);
// - then on the context and on every ending, lm-eval's clean-up of the WikiHow artifacts: strip
//   surrounding whitespace, " [title]" -> ". ", drop every "[...]" (shortest match), "  " -> " ".
// - label: an integer or a string holding one (the Hugging Face dataset stores strings).
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace quest {

struct HellaswagItem {
  std::string context;
  std::vector<std::string> endings;
  int label = 0;
  uint64_t line = 0;  // 1-based line in the file
};

// lm-eval's preprocess() of one text.
std::string hellaswag_preprocess(std::string_view text);
// Python's str.capitalize() for ASCII: first character upper case, the rest lower case.
std::string capitalize_ascii(std::string_view text);

// The first `limit` items (0: all). Throws quest::Error "FILE:LINE: what" on a malformed line: not
// JSON, a missing or mistyped field, fewer than 2 endings, a label out of range.
std::vector<HellaswagItem> read_hellaswag(const std::string& path, int64_t limit = 0);

}  // namespace quest
