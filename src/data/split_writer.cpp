#include "data/split_writer.h"

#include <unistd.h>

#include <algorithm>
#include <cstring>

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
  for (const int32_t t : tokens)
    QUEST_CHECK(t >= 0 && t < vocab_size_, "token id {} is outside the vocabulary [0, {})", t,
                vocab_size_);
  while (!tokens.empty()) {
    const uint64_t in_block = held_ % kBlockTokens;
    if (in_block == 0 && held_ / kBlockTokens == blocks_.size())
      blocks_.push_back(std::make_unique<char[]>(kBlockTokens * size_t(width_)));
    const size_t n = size_t(std::min<uint64_t>(
        {tokens.size(), kBlockTokens - in_block, shard_tokens_ - held_}));
    char* dst = blocks_[held_ / kBlockTokens].get() + in_block * width_;
    for (size_t i = 0; i < n; ++i) {
      if (width_ == 2) {
        const auto v = uint16_t(tokens[i]);
        std::memcpy(dst + 2 * i, &v, 2);
      } else {
        const auto v = uint32_t(tokens[i]);
        std::memcpy(dst + 4 * i, &v, 4);
      }
    }
    held_ += n;
    tokens_ += n;
    tokens = tokens.subspan(n);
    if (held_ == shard_tokens_) flush();
  }
}

void SplitWriter::finish() {
  if (held_ > 0) flush();
}

void SplitWriter::flush() {
  std::vector<std::span<const char>> pieces;
  for (uint64_t done = 0, b = 0; done < held_; ++b) {
    const uint64_t n = std::min<uint64_t>(kBlockTokens, held_ - done);
    pieces.emplace_back(blocks_[b].get(), size_t(n) * width_);
    done += n;
  }
  const std::string name = fmt::format("{}-{:06d}.bin", split_, files_.size());
  write_shard_bytes(dir_ + "/" + name, width_, held_, pieces);
  files_.push_back(name);
  held_ = 0;  // the blocks are kept for the next shard
}

void SplitWriter::remove_written() noexcept {
  for (const auto& f : files_) ::unlink((dir_ + "/" + f).c_str());
  files_.clear();
}

}  // namespace quest
