#include "cli/paths.h"

#include <cstdlib>
#include <filesystem>

#include "core/error.h"
#include "core/log.h"
#include "data/prepare.h"

namespace quest::cli {

namespace fs = std::filesystem;

std::string cache_dir() {
  if (const char* c = std::getenv("QUEST_CACHE"); c && *c) return c;
  const char* home = std::getenv("HOME");
  return std::string(home && *home ? home : ".") + "/.cache/quest";
}

std::string default_data_dir() {
  const std::string dir = cache_dir() + "/data/moby-dick-gpt2";
  if (fs::exists(dir + "/meta.json")) return dir;
  const std::string corpus = cache_dir() + "/corpora/moby-dick.txt";
  QUEST_CHECK(fs::exists(corpus),
              "the default corpus '{}' is missing: run scripts/setup.sh first (or pass --data DIR)",
              corpus);
  log_info("preparing the default corpus (Moby Dick, GPT-2 BPE, chapters as documents) into {}", dir);
  PrepareOptions opt;
  opt.inputs = {corpus};
  opt.out_dir = dir;
  opt.tokenizer = "gpt2";
  opt.split_blank_lines = 3;  // chapters are separated by three blank lines
  opt.val_fraction = 0.05;
  prepare_corpus(opt);
  return dir;
}

}  // namespace quest::cli
