#include "export/model_file.h"

#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "core/file_io.h"
#include "export/packed_export.h"

namespace quest {

ModelFile load_model_file(const std::string& path, int64_t batch) {
  QUEST_CHECK(file_exists(path), "model file '{}' does not exist", path);
  QUEST_CHECK(!std::filesystem::is_directory(path),
              "'{}' is a directory; give a checkpoint (checkpoint.bin) or a packed export (.safetensors)", path);
  char head[9] = {};
  std::ifstream(path, std::ios::binary).read(head, 9);
  ModelFile f;
  f.file_bytes = std::filesystem::file_size(path);
  uint64_t n;
  std::memcpy(&n, head, 8);
  if (std::memcmp(head, "QUESTCKP", 8) == 0) {
    f.loaded = load_model(path, batch);
    f.kind = ModelFileKind::Checkpoint;
  } else if (f.file_bytes >= 9 && n >= 2 && n <= 100'000'000 && head[8] == '{') {
    // A safetensors file: load_packed names what is wrong with it, if anything.
    f.loaded = load_packed(path, batch);
    f.kind = ModelFileKind::PackedExport;
  } else {
    fail("'{}' is not a quest checkpoint or packed export", path);
  }
  return f;
}

}  // namespace quest
