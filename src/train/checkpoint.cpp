#include "train/checkpoint.h"

#include <bit>
#include <cstring>

#include "core/error.h"
#include "core/file_io.h"

namespace quest {

namespace {
constexpr char kMagic[8] = {'Q', 'U', 'E', 'S', 'T', 'C', 'K', 'P'};
constexpr uint32_t kVersion = 1;
static_assert(std::endian::native == std::endian::little, "checkpoints are little-endian");
}  // namespace

void save_checkpoint(const std::string& path, nlohmann::json header,
                     const std::vector<CheckpointArray>& arrays) {
  header["arrays"] = nlohmann::json::array();
  for (const auto& a : arrays) header["arrays"].push_back({{"name", a.name}, {"count", a.count}});
  const std::string text = header.dump();
  const uint64_t header_bytes = text.size();

  AtomicFile file(path);
  uint32_t crc = 0;
  auto put = [&](const void* p, size_t n) {
    file.write(p, n);
    crc = crc32(p, n, crc);
  };
  put(kMagic, sizeof kMagic);
  put(&kVersion, sizeof kVersion);
  put(&header_bytes, sizeof header_bytes);
  put(text.data(), text.size());
  for (const auto& a : arrays) put(a.data, sizeof(float) * size_t(a.count));
  file.write(&crc, sizeof crc);
  file.commit();
}

Checkpoint load_checkpoint(const std::string& path) {
  QUEST_CHECK(file_exists(path), "checkpoint '{}' does not exist", path);
  return parse_checkpoint(read_file(path), path);
}

Checkpoint parse_checkpoint(const std::vector<char>& bytes, const std::string& path) {
  const size_t fixed = sizeof kMagic + sizeof(uint32_t) + sizeof(uint64_t);
  QUEST_CHECK(bytes.size() >= fixed + sizeof(uint32_t) && std::memcmp(bytes.data(), kMagic, 8) == 0,
              "'{}' is not a quest checkpoint", path);
  uint32_t version;
  uint64_t header_bytes;
  std::memcpy(&version, bytes.data() + 8, 4);
  std::memcpy(&header_bytes, bytes.data() + 12, 8);
  QUEST_CHECK(version == kVersion, "checkpoint '{}' has version {}, this quest reads version {}", path,
              version, kVersion);
  QUEST_CHECK(header_bytes <= bytes.size() - fixed - 4, "checkpoint '{}' is truncated", path);
  uint32_t stored_crc;
  std::memcpy(&stored_crc, bytes.data() + bytes.size() - 4, 4);
  QUEST_CHECK(crc32(bytes.data(), bytes.size() - 4) == stored_crc,
              "checkpoint '{}' is corrupt (checksum mismatch)", path);

  Checkpoint ck;
  try {
    ck.header = nlohmann::json::parse(bytes.begin() + fixed, bytes.begin() + fixed + header_bytes);
    size_t pos = fixed + header_bytes;
    for (const auto& a : ck.header.at("arrays")) {
      const auto count = a.at("count").get<int64_t>();
      const size_t n = sizeof(float) * size_t(count);
      QUEST_CHECK(count >= 0 && pos + n <= bytes.size() - 4, "checkpoint '{}' is truncated", path);
      std::vector<float> data(static_cast<size_t>(count));
      std::memcpy(data.data(), bytes.data() + pos, n);
      pos += n;
      ck.arrays.emplace(a.at("name").get<std::string>(), std::move(data));
    }
    QUEST_CHECK(pos == bytes.size() - 4, "checkpoint '{}' has {} unexpected trailing bytes", path,
                bytes.size() - 4 - pos);
  } catch (const nlohmann::json::exception& e) {
    fail("checkpoint '{}' has a malformed header: {}", path, e.what());
  }
  return ck;
}

const std::vector<float>& Checkpoint::array(const std::string& name, int64_t count) const {
  auto it = arrays.find(name);
  QUEST_CHECK(it != arrays.end(), "checkpoint has no array '{}'", name);
  QUEST_CHECK(int64_t(it->second.size()) == count, "checkpoint array '{}' holds {} values, expected {}",
              name, it->second.size(), count);
  return it->second;
}

}  // namespace quest
