#pragma once
// Sequential byte input from a file, decompressed on the fly when the name ends in ".zst" (libzstd
// streaming: a compressed corpus is never held whole in memory).
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace quest {

class InputStream {
 public:
  virtual ~InputStream() = default;
  // Up to n bytes into buf; 0 only at the end of the data. Throws quest::Error naming the file on
  // a read error or on corrupt or truncated compressed data.
  virtual size_t read(char* buf, size_t n) = 0;
  // Bytes consumed from the file so far (compressed bytes for .zst), for progress displays.
  virtual uint64_t file_bytes_read() const = 0;
  virtual const std::string& path() const = 0;
};

// Opens path (throws quest::Error when it cannot be opened).
std::unique_ptr<InputStream> open_input_stream(const std::string& path);

// True when the name ends in ".zst".
bool is_zstd_path(const std::string& path);

}  // namespace quest
