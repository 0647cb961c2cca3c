#pragma once
// The safetensors container (https://github.com/huggingface/safetensors, "Format"), our own reader
// and writer:
//   u64 N (little-endian) | N bytes of JSON header | byte buffer
// The header is a JSON object: "__metadata__" (optional) maps strings to strings; every other key
// names a tensor: {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, offsets relative
// to the start of the byte buffer. The tensors cover the buffer exactly, without holes or overlaps.
// The writer pads the header with spaces to a multiple of 8 bytes and orders the tensors by
// element size, largest first, so that every tensor starts aligned to its element size (as the
// reference library does).
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "export/dtype.h"

namespace quest {

struct TensorInfo {
  std::string name;
  Dtype dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte offsets in the buffer
  int64_t numel() const;
};

class SafetensorsWriter {
 public:
  void set_metadata(const std::string& key, const std::string& value) { metadata_[key] = value; }
  // Copies the bytes (numel(shape) * dtype_size(dtype) of them); throws on a size mismatch or a
  // name given twice.
  void add(const std::string& name, Dtype dtype, std::vector<int64_t> shape, const void* data,
           size_t bytes);
  void add_f32(const std::string& name, std::vector<int64_t> shape, std::span<const float> v);
  // The whole file in memory (header and buffer).
  std::vector<uint8_t> serialize() const;
  // Written atomically (a temporary file renamed), so a failed export leaves no partial file.
  void write(const std::string& path) const;

 private:
  struct Entry {
    std::string name;
    Dtype dtype;
    std::vector<int64_t> shape;
    std::vector<uint8_t> bytes;
  };
  std::map<std::string, std::string> metadata_;
  std::vector<Entry> entries_;
};

class SafetensorsFile {
 public:
  // Reads and validates the whole file; throws quest::Error naming the problem (truncated, header
  // not JSON, bad dtype/shape/offsets, holes or overlaps, size mismatch).
  static SafetensorsFile open(const std::string& path);
  // The same from bytes in memory; `what` names them in errors.
  static SafetensorsFile parse(std::vector<uint8_t> bytes, const std::string& what);

  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }  // in buffer order
  const TensorInfo* find(const std::string& name) const;
  std::span<const uint8_t> data(const TensorInfo& t) const;
  std::span<const uint8_t> buffer() const;  // every tensor's bytes
  uint64_t file_size() const { return bytes_.size(); }
  uint64_t header_size() const { return header_size_; }

 private:
  std::vector<uint8_t> bytes_;
  uint64_t header_size_ = 0;  // N
  std::map<std::string, std::string> metadata_;
  std::vector<TensorInfo> tensors_;
};

}  // namespace quest
