#include "export/safetensors.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file_io.h"

namespace quest {

static_assert(std::endian::native == std::endian::little, "safetensors is little-endian");

namespace {
constexpr uint64_t kMaxHeader = 100'000'000;  // the reference library's limit

int64_t numel_of(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}
}  // namespace

int64_t TensorInfo::numel() const { return numel_of(shape); }

// ---- writer ------------------------------------------------------------------------------------

void SafetensorsWriter::add(const std::string& name, Dtype dtype, std::vector<int64_t> shape,
                            const void* data, size_t bytes) {
  QUEST_CHECK(!name.empty() && name != "__metadata__", "safetensors: bad tensor name '{}'", name);
  for (const auto& e : entries_) QUEST_CHECK(e.name != name, "safetensors: tensor '{}' added twice", name);
  for (int64_t d : shape) QUEST_CHECK(d >= 0, "safetensors: tensor '{}' has a negative dimension", name);
  QUEST_CHECK(uint64_t(numel_of(shape)) * uint64_t(dtype_size(dtype)) == bytes,
              "safetensors: tensor '{}' of shape {} and dtype {} needs {} bytes, got {}", name,
              shape_str(shape), dtype_name(dtype), numel_of(shape) * dtype_size(dtype), bytes);
  const auto* p = static_cast<const uint8_t*>(data);
  entries_.push_back({name, dtype, std::move(shape), std::vector<uint8_t>(p, p + bytes)});
}

void SafetensorsWriter::add_f32(const std::string& name, std::vector<int64_t> shape,
                                std::span<const float> v) {
  add(name, Dtype::F32, std::move(shape), v.data(), v.size_bytes());
}

std::vector<uint8_t> SafetensorsWriter::serialize() const {
  // Largest elements first (stable: insertion order within a size), so offsets stay aligned.
  std::vector<const Entry*> order;
  for (const auto& e : entries_) order.push_back(&e);
  std::stable_sort(order.begin(), order.end(), [](const Entry* a, const Entry* b) {
    return dtype_size(a->dtype) > dtype_size(b->dtype);
  });
  nlohmann::json header = nlohmann::json::object();
  if (!metadata_.empty()) header["__metadata__"] = metadata_;
  uint64_t offset = 0;
  for (const Entry* e : order) {
    header[e->name] = {{"dtype", dtype_name(e->dtype)},
                       {"shape", e->shape},
                       {"data_offsets", {offset, offset + e->bytes.size()}}};
    offset += e->bytes.size();
  }
  std::string text = header.dump();
  text.append((8 - (8 + text.size()) % 8) % 8, ' ');
  const uint64_t n = text.size();
  std::vector<uint8_t> out(8 + n + offset);
  std::memcpy(out.data(), &n, 8);
  std::memcpy(out.data() + 8, text.data(), n);
  uint8_t* p = out.data() + 8 + n;
  for (const Entry* e : order) {
    if (!e->bytes.empty()) std::memcpy(p, e->bytes.data(), e->bytes.size());
    p += e->bytes.size();
  }
  return out;
}

void SafetensorsWriter::write(const std::string& path) const {
  const std::vector<uint8_t> bytes = serialize();
  AtomicFile file(path);
  file.write(bytes.data(), bytes.size());
  file.commit();
}

// ---- reader ------------------------------------------------------------------------------------

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  QUEST_CHECK(file_exists(path), "'{}' does not exist", path);
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  QUEST_CHECK(in, "cannot open '{}'", path);
  std::vector<uint8_t> bytes(static_cast<size_t>(in.tellg()));  // read once, no second copy
  in.seekg(0);
  QUEST_CHECK(in.read(reinterpret_cast<char*>(bytes.data()), std::streamsize(bytes.size())) || bytes.empty(),
              "cannot read '{}'", path);
  return parse(std::move(bytes), path);
}

SafetensorsFile SafetensorsFile::parse(std::vector<uint8_t> bytes, const std::string& what) {
  SafetensorsFile f;
  f.bytes_ = std::move(bytes);
  const uint64_t size = f.bytes_.size();
  QUEST_CHECK(size >= 8, "'{}' is not a safetensors file: {} bytes, shorter than its 8-byte header "
              "length", what, size);
  uint64_t n;
  std::memcpy(&n, f.bytes_.data(), 8);
  QUEST_CHECK(n <= kMaxHeader, "'{}' is not a safetensors file (header length {} is implausible)",
              what, n);
  QUEST_CHECK(n <= size - 8, "'{}' is truncated: its header needs {} bytes, the file has {} after the "
              "length", what, n, size - 8);
  QUEST_CHECK(n >= 2 && f.bytes_[8] == '{', "'{}' is not a safetensors file (the header is not a "
              "JSON object)", what);
  f.header_size_ = n;
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(f.bytes_.begin() + 8, f.bytes_.begin() + 8 + int64_t(n));
  } catch (const nlohmann::json::exception& e) {
    fail("'{}' has a corrupt safetensors header (not valid JSON): {}", what, e.what());
  }
  QUEST_CHECK(header.is_object(), "'{}': the safetensors header is not a JSON object", what);
  const uint64_t buffer = size - 8 - n;
  for (const auto& [key, value] : header.items()) {
    if (key == "__metadata__") {
      QUEST_CHECK(value.is_object(), "'{}': __metadata__ must be an object of strings", what);
      for (const auto& [k, v] : value.items()) {
        QUEST_CHECK(v.is_string(), "'{}': __metadata__ value of '{}' is not a string", what, k);
        f.metadata_[k] = v.get<std::string>();
      }
      continue;
    }
    QUEST_CHECK(value.is_object() && value.contains("dtype") && value.contains("shape") &&
                    value.contains("data_offsets"),
                "'{}': tensor '{}' needs dtype, shape and data_offsets", what, key);
    TensorInfo t;
    t.name = key;
    const auto& dt = value["dtype"];
    QUEST_CHECK(dt.is_string(), "'{}': tensor '{}' has a non-string dtype", what, key);
    const auto parsed = parse_dtype(dt.get<std::string>());
    QUEST_CHECK(parsed.has_value(), "'{}': tensor '{}' has an unsupported dtype '{}'", what, key,
                dt.get<std::string>());
    t.dtype = *parsed;
    const auto& sh = value["shape"];
    QUEST_CHECK(sh.is_array(), "'{}': tensor '{}' has a shape that is not an array", what, key);
    uint64_t numel = 1;
    for (const auto& d : sh) {
      QUEST_CHECK(d.is_number_unsigned() || (d.is_number_integer() && d.get<int64_t>() >= 0),
                  "'{}': tensor '{}' has a bad shape {}", what, key, sh.dump());
      t.shape.push_back(d.get<int64_t>());
      QUEST_CHECK(t.shape.back() == 0 || numel <= (uint64_t(1) << 62) / uint64_t(t.shape.back()),
                  "'{}': tensor '{}' has an implausible shape {}", what, key, sh.dump());
      numel *= uint64_t(t.shape.back());
    }
    const auto& off = value["data_offsets"];
    QUEST_CHECK(off.is_array() && off.size() == 2 && off[0].is_number_unsigned() &&
                    off[1].is_number_unsigned(),
                "'{}': tensor '{}' has bad data_offsets {}", what, key, off.dump());
    t.begin = off[0].get<uint64_t>();
    t.end = off[1].get<uint64_t>();
    QUEST_CHECK(t.begin <= t.end, "'{}': tensor '{}' has data_offsets {} out of order", what, key,
                off.dump());
    QUEST_CHECK(t.end <= buffer, "'{}' is truncated: tensor '{}' ends at byte {} of the data, which "
                "has {}", what, key, t.end, buffer);
    QUEST_CHECK(t.end - t.begin == numel * uint64_t(dtype_size(t.dtype)),
                "'{}': tensor '{}' ({} {}) needs {} bytes, its data_offsets give {}", what, key,
                dtype_name(t.dtype), shape_str(t.shape), numel * uint64_t(dtype_size(t.dtype)),
                t.end - t.begin);
    f.tensors_.push_back(std::move(t));
  }
  std::sort(f.tensors_.begin(), f.tensors_.end(),
            [](const TensorInfo& a, const TensorInfo& b) { return a.begin < b.begin || (a.begin == b.begin && a.end < b.end); });
  uint64_t pos = 0;
  for (const auto& t : f.tensors_) {
    QUEST_CHECK(t.begin == pos, "'{}': tensor '{}' starts at byte {} of the data, expected {} (a {} "
                "in the data)", what, t.name, t.begin, pos, t.begin > pos ? "hole" : "overlap");
    pos = t.end;
  }
  QUEST_CHECK(pos == buffer, "'{}': the tensors cover {} bytes of data, the file holds {}{}", what,
              pos, buffer, pos < buffer ? " (trailing bytes)" : "");
  return f;
}

const TensorInfo* SafetensorsFile::find(const std::string& name) const {
  for (const auto& t : tensors_)
    if (t.name == name) return &t;
  return nullptr;
}

std::span<const uint8_t> SafetensorsFile::data(const TensorInfo& t) const {
  return {bytes_.data() + 8 + header_size_ + t.begin, size_t(t.end - t.begin)};
}

std::span<const uint8_t> SafetensorsFile::buffer() const {
  return {bytes_.data() + 8 + header_size_, size_t(bytes_.size() - 8 - header_size_)};
}

}  // namespace quest
