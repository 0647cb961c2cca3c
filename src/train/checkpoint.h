#pragma once
// Checkpoint container: a JSON header (configs, step, data position, ...) and named fp32 arrays
// (parameters, optimizer moments, learned quantizer parameters), closed by a CRC-32 of everything
// before it. Written atomically: a crash mid-write leaves the previous checkpoint intact.
//
//   "QUESTCKP" | u32 version | u64 header bytes | header JSON | arrays (f32, little-endian) | u32 crc
//   The header's "arrays" lists {name, count} in file order.
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace quest {

struct CheckpointArray {
  std::string name;
  const float* data;
  int64_t count;
};

void save_checkpoint(const std::string& path, nlohmann::json header,
                     const std::vector<CheckpointArray>& arrays);

struct Checkpoint {
  nlohmann::json header;
  std::map<std::string, std::vector<float>> arrays;
  // The array `name`, which must hold `count` floats; throws quest::Error otherwise.
  const std::vector<float>& array(const std::string& name, int64_t count) const;
};

// Throws quest::Error naming the problem: missing file, not a checkpoint, unsupported version,
// truncated, checksum mismatch, malformed header.
Checkpoint load_checkpoint(const std::string& path);
// The same checks on a checkpoint file's bytes (read once and broadcast to every rank); `path`
// names it in the messages.
Checkpoint parse_checkpoint(const std::vector<char>& bytes, const std::string& path);

}  // namespace quest
