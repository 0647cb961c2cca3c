#pragma once
// One entry point for commands that take "a model": a checkpoint or a packed export, told apart
// by content.
#include <cstdint>
#include <string>

#include "train/model_io.h"

namespace quest {

enum class ModelFileKind { Checkpoint, PackedExport };

struct ModelFile {
  LoadedModel loaded;
  ModelFileKind kind = ModelFileKind::Checkpoint;
  uint64_t file_bytes = 0;
};

// Throws quest::Error naming the problem (neither a checkpoint nor a packed export, corrupt, ...).
ModelFile load_model_file(const std::string& path, int64_t batch = 1);

}  // namespace quest
