#include "data/split_writer.h"

#include <unistd.h>

#include <algorithm>

#include "core/error.h"
#include "data/shard.h"

namespace quest {

SplitWriter::SplitWriter(std::string dir, std::string split, uint64_t shard_tokens,
                         int32_t vocab_size)
    : dir_(std::move(dir)), split_(std::move(split)), shard_tokens_(shard_tokens),
      vocab_size_(vocab_size), width_(shard_token_width(vocab_size)) {
  QUEST_CHECK(shard_tokens_ >= 1 && shard_tokens_ <= kShardMaxTokens,
              "tokens per shard must be in [1, {}], got {}", kShardMaxTokens, shard_tokens_);
  QUEST_CHECK(vocab_size_ > 0, "invalid vocabulary size {}", vocab_size_);
}

void SplitWriter::append(std::span<const int32_t> tokens) {
  while (!tokens.empty()) {
    const size_t held = width_ == 2 ? buf16_.size() : buf32_.size();
    const size_t n = std::min<size_t>(tokens.size(), shard_tokens_ - held);
    for (size_t i = 0; i < n; ++i) {
      const int32_t t = tokens[i];
      QUEST_CHECK(t >= 0 && t < vocab_size_, "token id {} is outside the vocabulary [0, {})", t,
                  vocab_size_);
      if (width_ == 2) buf16_.push_back(uint16_t(t));
      else buf32_.push_back(uint32_t(t));
    }
    tokens_ += n;
    tokens = tokens.subspan(n);
    if (held + n == shard_tokens_) flush();
  }
}

void SplitWriter::finish() {
  if (!buf16_.empty() || !buf32_.empty()) flush();
}

void SplitWriter::flush() {
  const std::string name = fmt::format("{}-{:06d}.bin", split_, files_.size());
  const std::string path = dir_ + "/" + name;
  if (width_ == 2) write_shard(path, std::span<const uint16_t>(buf16_));
  else write_shard(path, std::span<const uint32_t>(buf32_));
  files_.push_back(name);
  buf16_.clear();  // keeps the capacity for the next shard
  buf32_.clear();
}

void SplitWriter::remove_written() noexcept {
  for (const auto& f : files_) ::unlink((dir_ + "/" + f).c_str());
  files_.clear();
}

}  // namespace quest
