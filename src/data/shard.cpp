#include "data/shard.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <bit>
#include <cerrno>
#include <cstring>
#include <utility>

#include "core/error.h"
#include "core/file_io.h"

namespace quest {

// The format is little-endian; tokens are read in place, so the host must be too.
static_assert(std::endian::native == std::endian::little, "token shards need a little-endian host");

void write_shard_bytes(const std::string& path, int width, uint64_t count,
                       std::span<const std::span<const char>> pieces) {
  QUEST_CHECK(width == 2 || width == 4, "token width must be 2 or 4 bytes, got {}", width);
  QUEST_CHECK(count <= kShardMaxTokens,
              "cannot write shard '{}': {} tokens exceed the format's limit of {} per shard", path,
              count, kShardMaxTokens);
  uint64_t bytes = 0;
  for (const auto& p : pieces) bytes += p.size();
  QUEST_CHECK(bytes == count * uint64_t(width),
              "cannot write shard '{}': {} bytes of tokens for {} tokens of {} bytes", path, bytes,
              count, width);
  std::array<int32_t, kShardHeaderInts> header{};
  header[0] = width == 2 ? kShardMagicU16 : kShardMagicU32;
  header[1] = width == 2 ? kShardVersionU16 : kShardVersionU32;
  header[2] = static_cast<int32_t>(count);
  AtomicFile file(path);
  file.write(header.data(), kShardHeaderBytes);
  for (const auto& p : pieces) file.write(p.data(), p.size());
  file.commit();
}

void write_shard(const std::string& path, std::span<const uint16_t> tokens) {
  const std::span<const char> bytes(reinterpret_cast<const char*>(tokens.data()), tokens.size_bytes());
  write_shard_bytes(path, 2, tokens.size(), {&bytes, 1});
}

void write_shard(const std::string& path, std::span<const uint32_t> tokens) {
  const std::span<const char> bytes(reinterpret_cast<const char*>(tokens.data()), tokens.size_bytes());
  write_shard_bytes(path, 4, tokens.size(), {&bytes, 1});
}

Shard::Shard(const std::string& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  QUEST_CHECK(fd >= 0, "cannot open token shard '{}': {}", path, std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    fail("cannot stat token shard '{}': {}", path, std::strerror(err));
  }
  const auto file_bytes = static_cast<uint64_t>(st.st_size);
  if (file_bytes < kShardHeaderBytes) {
    ::close(fd);
    fail("token shard '{}' is truncated: {} bytes, shorter than the {}-byte header", path,
         file_bytes, kShardHeaderBytes);
  }
  map_ = ::mmap(nullptr, file_bytes, PROT_READ, MAP_PRIVATE, fd, 0);
  const int map_err = errno;
  ::close(fd);  // the mapping stays valid without the descriptor
  if (map_ == MAP_FAILED) {
    map_ = nullptr;
    fail("cannot memory-map token shard '{}': {}", path, std::strerror(map_err));
  }
  map_bytes_ = file_bytes;
  try {
    int32_t header[3];
    std::memcpy(header, map_, sizeof(header));
    const int32_t magic = header[0], version = header[1], count = header[2];
    if (magic == kShardMagicU16) {
      width_ = 2;
      QUEST_CHECK(version == kShardVersionU16,
                  "token shard '{}': unsupported version {} for uint16 shards (magic {}); "
                  "expected version {}",
                  path, version, magic, kShardVersionU16);
    } else if (magic == kShardMagicU32) {
      width_ = 4;
      QUEST_CHECK(version == kShardVersionU32,
                  "token shard '{}': unsupported version {} for uint32 shards (magic {}); "
                  "expected version {}",
                  path, version, magic, kShardVersionU32);
    } else {
      fail("'{}' is not a token shard: wrong magic number {} (expected {} for uint16 tokens or {} "
           "for uint32 tokens)",
           path, magic, kShardMagicU16, kShardMagicU32);
    }
    QUEST_CHECK(count >= 0, "token shard '{}': negative token count {} in the header", path, count);
    count_ = static_cast<uint64_t>(count);
    const uint64_t expected = kShardHeaderBytes + count_ * static_cast<uint64_t>(width_);
    QUEST_CHECK(file_bytes >= expected,
                "token shard '{}' is truncated: the header says {} tokens of {} bytes, so expected "
                "{} bytes, got {}",
                path, count_, width_, expected, file_bytes);
    QUEST_CHECK(file_bytes == expected,
                "token shard '{}' has {} trailing bytes: the header says {} tokens of {} bytes, so "
                "expected {} bytes, got {}",
                path, file_bytes - expected, count_, width_, expected, file_bytes);
  } catch (...) {
    release();
    throw;
  }
  data_ = static_cast<const unsigned char*>(map_) + kShardHeaderBytes;
}

Shard::~Shard() { release(); }

Shard::Shard(Shard&& other) noexcept { *this = std::move(other); }

Shard& Shard::operator=(Shard&& other) noexcept {
  if (this != &other) {
    release();
    path_ = std::move(other.path_);
    map_ = std::exchange(other.map_, nullptr);
    map_bytes_ = std::exchange(other.map_bytes_, 0);
    data_ = std::exchange(other.data_, nullptr);
    count_ = std::exchange(other.count_, 0);
    width_ = other.width_;
  }
  return *this;
}

void Shard::release() {
  if (map_) ::munmap(map_, map_bytes_);
  map_ = nullptr;
  map_bytes_ = 0;
  data_ = nullptr;
}

void Shard::copy(uint64_t begin, uint64_t count, int32_t* out) const {
  QUEST_CHECK(begin <= count_ && count <= count_ - begin,
              "token shard '{}': read of {} tokens at {} is past its {} tokens", path_, count, begin,
              count_);
  if (width_ == 2) {
    const auto* p = reinterpret_cast<const uint16_t*>(data_) + begin;
    for (uint64_t k = 0; k < count; ++k) out[k] = p[k];
  } else {
    const auto* p = reinterpret_cast<const uint32_t*>(data_) + begin;
    for (uint64_t k = 0; k < count; ++k) out[k] = static_cast<int32_t>(p[k]);
  }
}

}  // namespace quest
