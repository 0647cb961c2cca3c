#pragma once
// Token shards in llm.c's format: a header of 256 little-endian int32 (magic, version, token count,
// then zeros) followed by the tokens. uint16 tokens: magic 20240520, version 1; uint32 tokens (for
// vocabularies above 65536): magic 20240801, version 7. Shards are written atomically and read
// through a read-only memory map, so a training run touches only the pages it samples.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

namespace quest {

inline constexpr int32_t kShardMagicU16 = 20240520;
inline constexpr int32_t kShardVersionU16 = 1;
inline constexpr int32_t kShardMagicU32 = 20240801;
inline constexpr int32_t kShardVersionU32 = 7;
inline constexpr size_t kShardHeaderInts = 256;
inline constexpr size_t kShardHeaderBytes = kShardHeaderInts * sizeof(int32_t);
// The header stores the count as int32.
inline constexpr uint64_t kShardMaxTokens = 0x7fffffffULL;

// Write a shard (temporary file + fsync + rename). Throws quest::Error on failure or when there
// are more than kShardMaxTokens tokens.
void write_shard(const std::string& path, std::span<const uint16_t> tokens);
void write_shard(const std::string& path, std::span<const uint32_t> tokens);
// The same from the tokens' bytes (count tokens of `width` = 2 or 4 bytes, little-endian), given
// as consecutive pieces, so that a writer can buffer a shard in blocks.
void write_shard_bytes(const std::string& path, int width, uint64_t count,
                       std::span<const std::span<const char>> pieces);

// Bytes per token a vocabulary of this size needs: 2 up to 65536 ids, else 4.
inline int shard_token_width(int64_t vocab_size) { return vocab_size <= 65536 ? 2 : 4; }

// A read-only, memory-mapped shard. Opening validates magic, version and the exact file size
// (header + count * width) and names the file and the problem when any is wrong.
class Shard {
 public:
  explicit Shard(const std::string& path);
  ~Shard();
  Shard(Shard&& other) noexcept;
  Shard& operator=(Shard&& other) noexcept;
  Shard(const Shard&) = delete;
  Shard& operator=(const Shard&) = delete;

  const std::string& path() const { return path_; }
  uint64_t size() const { return count_; }  // number of tokens
  int width() const { return width_; }      // bytes per token: 2 or 4
  uint32_t operator[](uint64_t i) const {
    return width_ == 2 ? reinterpret_cast<const uint16_t*>(data_)[i]
                       : reinterpret_cast<const uint32_t*>(data_)[i];
  }
  // out[k] = token[begin + k] for k < count; requires begin + count <= size().
  void copy(uint64_t begin, uint64_t count, int32_t* out) const;

 private:
  void release();
  std::string path_;
  void* map_ = nullptr;
  size_t map_bytes_ = 0;
  const unsigned char* data_ = nullptr;  // first token
  uint64_t count_ = 0;
  int width_ = 2;
};

}  // namespace quest
