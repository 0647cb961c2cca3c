#pragma once
// Writes one split's token stream as numbered shards DIR/<split>-000000.bin, ... of a fixed size
// (the last one shorter), uint16 or uint32 by vocabulary size. A shard is buffered in fixed-size
// blocks (memory = the shard's bytes, without the copies of a growing array) and written
// atomically; remove_written() deletes the shards again when a run fails, so no partial output
// is left behind.
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace quest {

class SplitWriter {
 public:
  SplitWriter(std::string dir, std::string split, uint64_t shard_tokens, int32_t vocab_size);

  // Appends tokens (each checked to be in [0, vocab_size)), writing every shard that fills up.
  void append(std::span<const int32_t> tokens);
  // Writes what is left as the last shard (nothing when empty).
  void finish();
  // Deletes the shards written so far (used on failure).
  void remove_written() noexcept;

  const std::string& split() const { return split_; }
  uint64_t tokens() const { return tokens_; }
  const std::vector<std::string>& files() const { return files_; }  // names, relative to dir
  int token_width() const { return width_; }

 private:
  static constexpr size_t kBlockTokens = 1 << 20;
  void flush();

  std::string dir_, split_;
  uint64_t shard_tokens_;
  int32_t vocab_size_;
  int width_;
  std::vector<std::unique_ptr<char[]>> blocks_;  // kBlockTokens tokens each, the last partly used
  uint64_t held_ = 0;                            // tokens in the blocks
  uint64_t tokens_ = 0;
  std::vector<std::string> files_;
};

}  // namespace quest
