#include "data/dataset_meta.h"

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file_io.h"

namespace quest {

namespace {

using nlohmann::json;

template <class T>
void get_opt(const json& j, const char* key, std::optional<T>& out, const std::string& path) {
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) return;
  try {
    out = it->get<T>();
  } catch (const json::exception& e) {
    fail("'{}': field \"{}\" has the wrong type: {}", path, key, e.what());
  }
}

}  // namespace

std::optional<SplitMeta> read_split_meta(const std::string& dir, const std::string& split) {
  const std::string path = dir + "/" + kMetaFileName;
  if (!file_exists(path)) return std::nullopt;
  json j;
  try {
    j = json::parse(read_text_file(path));
  } catch (const json::exception& e) {
    fail("'{}' is not valid JSON: {}", path, e.what());
  }
  QUEST_CHECK(j.is_object(), "'{}': expected a JSON object", path);
  SplitMeta m;
  get_opt(j, "tokenizer", m.tokenizer, path);
  get_opt(j, "vocab_size", m.vocab_size, path);
  get_opt(j, "eot_token", m.eot_token, path);
  get_opt(j, "eot_position", m.eot_position, path);
  const auto splits = j.find("splits");
  if (splits != j.end() && splits->is_object()) {
    const auto s = splits->find(split);
    if (s != splits->end() && s->is_object()) {
      get_opt(*s, "text_bytes", m.text_bytes, path);
      get_opt(*s, "documents", m.documents, path);
      get_opt(*s, "tokens", m.tokens, path);
      get_opt(*s, "skipped_bad", m.skipped_bad, path);
      std::optional<std::vector<std::string>> files;
      get_opt(*s, "files", files, path);
      if (files) m.files = std::move(*files);
    }
  }
  return m;
}

}  // namespace quest
