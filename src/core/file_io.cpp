#include "core/file_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>

#include "core/error.h"

namespace quest {

std::vector<char> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  QUEST_CHECK(in, "cannot open '{}': {}", path, std::strerror(errno));
  const auto size = static_cast<size_t>(in.tellg());
  std::vector<char> data(size);
  in.seekg(0);
  in.read(data.data(), static_cast<std::streamsize>(size));
  QUEST_CHECK(in || size == 0, "cannot read '{}'", path);
  return data;
}

std::string read_text_file(const std::string& path) {
  auto data = read_file(path);
  return std::string(data.begin(), data.end());
}

bool file_exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)) {
  temp_path_ = path_ + ".tmp." + std::to_string(::getpid());
  fd_ = ::open(temp_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  QUEST_CHECK(fd_ >= 0, "cannot create '{}': {}", temp_path_, std::strerror(errno));
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(temp_path_.c_str());
}

void AtomicFile::write(const void* data, size_t bytes) {
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    const ssize_t n = ::write(fd_, p, bytes);
    if (n < 0 && errno == EINTR) continue;
    QUEST_CHECK(n > 0, "cannot write '{}': {}", temp_path_, std::strerror(errno));
    p += n;
    bytes -= static_cast<size_t>(n);
  }
}

void AtomicFile::commit() {
  QUEST_CHECK(::fsync(fd_) == 0, "cannot sync '{}': {}", temp_path_, std::strerror(errno));
  QUEST_CHECK(::close(fd_) == 0, "cannot close '{}': {}", temp_path_, std::strerror(errno));
  fd_ = -1;
  QUEST_CHECK(::rename(temp_path_.c_str(), path_.c_str()) == 0, "cannot rename '{}' to '{}': {}",
              temp_path_, path_, std::strerror(errno));
  committed_ = true;
}

uint32_t crc32(const void* data, size_t bytes, uint32_t crc) {
  static const auto table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  const auto* p = static_cast<const uint8_t*>(data);
  crc = ~crc;
  for (size_t i = 0; i < bytes; ++i) crc = table[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

}  // namespace quest
