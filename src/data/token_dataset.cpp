#include "data/token_dataset.h"

#include <glob.h>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <regex>

#include "core/error.h"

namespace quest {

namespace {

bool is_directory(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::vector<std::string> glob_files(const std::string& pattern) {
  glob_t g{};
  const int rc = ::glob(pattern.c_str(), 0, nullptr, &g);
  std::vector<std::string> out;
  if (rc == 0)
    for (size_t i = 0; i < g.gl_pathc; ++i) out.emplace_back(g.gl_pathv[i]);
  ::globfree(&g);
  QUEST_CHECK(rc == 0 || rc == GLOB_NOMATCH, "cannot expand '{}' (glob error {})", pattern, rc);
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

void TokenDataset::add(const std::string& path) {
  shards_.emplace_back(path);
  starts_.push_back(total_);
  total_ += shards_.back().size();
}

TokenDataset TokenDataset::open_files(const std::vector<std::string>& paths) {
  QUEST_CHECK(!paths.empty(), "no token shards given");
  TokenDataset d;
  for (const auto& p : paths) d.add(p);
  return d;
}

TokenDataset TokenDataset::open_glob(const std::string& pattern) {
  const auto files = glob_files(pattern);
  QUEST_CHECK(!files.empty(), "no token shards match '{}'", pattern);
  return open_files(files);
}

TokenDataset TokenDataset::open_split(const std::string& dir, const std::string& split) {
  QUEST_CHECK(is_directory(dir), "'{}' is not a directory", dir);
  auto meta = read_split_meta(dir, split);
  std::vector<std::string> files;
  if (meta && !meta->files.empty()) {
    for (const auto& f : meta->files) files.push_back(dir + "/" + f);
  } else {
    // Only <split>-<digits>.bin, so that "train" does not pick up e.g. "train-extra-000000.bin".
    const std::regex name(std::regex_replace(split, std::regex(R"([.^$|()\[\]{}*+?\\])"), R"(\$&)") +
                          R"(-\d+\.bin)");
    for (const auto& f : glob_files(dir + "/" + split + "-*.bin"))
      if (std::regex_match(std::filesystem::path(f).filename().string(), name)) files.push_back(f);
  }
  QUEST_CHECK(!files.empty(), "no '{}' shards in '{}' (expected files named {}-000000.bin, ...)",
              split, dir, split);
  TokenDataset d = open_files(files);
  if (meta && meta->tokens)
    QUEST_CHECK(*meta->tokens == d.total_,
                "'{}/{}' says split '{}' has {} tokens, but its {} shard(s) hold {}", dir,
                kMetaFileName, split, *meta->tokens, files.size(), d.total_);
  d.meta_ = std::move(meta);
  return d;
}

TokenDataset TokenDataset::open(const std::string& spec, const std::string& split) {
  if (is_directory(spec)) return open_split(spec, split);
  if (spec.find_first_of("*?[") != std::string::npos) return open_glob(spec);
  return open_files({spec});
}

void TokenDataset::copy(uint64_t begin, uint64_t count, int32_t* out) const {
  QUEST_CHECK(begin <= total_ && count <= total_ - begin,
              "read of {} tokens at position {} is past the end of the {}-token dataset", count,
              begin, total_);
  // The shard holding `begin`: the last one starting at or before it (skipping empty shards).
  size_t i = static_cast<size_t>(std::upper_bound(starts_.begin(), starts_.end(), begin) -
                                 starts_.begin()) - 1;
  while (count > 0) {
    const uint64_t local = begin - starts_[i];
    const uint64_t n = std::min(count, shards_[i].size() - local);
    shards_[i].copy(local, n, out);
    out += n;
    begin += n;
    count -= n;
    ++i;
  }
}

}  // namespace quest
