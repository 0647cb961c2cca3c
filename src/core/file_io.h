#pragma once
// File helpers: whole-file reads, atomic writes (temporary file + fsync + rename, so an interrupted
// run never leaves a half-written file under the final name) and a CRC-32 for checksums.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace quest {

std::vector<char> read_file(const std::string& path);
std::string read_text_file(const std::string& path);

// Calls write(fd-backed stream) on "<path>.tmp.<pid>", then renames it to path. On any error the
// temporary file is removed and quest::Error is thrown.
class AtomicFile {
 public:
  explicit AtomicFile(std::string path);
  ~AtomicFile();  // removes the temporary file unless commit() succeeded
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, size_t bytes);
  void write(std::string_view s) { write(s.data(), s.size()); }
  void commit();  // flush, fsync, rename
  const std::string& temp_path() const { return temp_path_; }

 private:
  std::string path_, temp_path_;
  int fd_ = -1;
  bool committed_ = false;
};

uint32_t crc32(const void* data, size_t bytes, uint32_t crc = 0);

bool file_exists(const std::string& path);

}  // namespace quest
