#pragma once
// The size of a model artifact as size-constrained competitions (e.g. Parameter Golf) count it:
// its bytes, raw and zstd-compressed.
#include <cstdint>
#include <string>

namespace quest {

struct ArtifactSize {
  uint64_t raw = 0, zstd = 0;
  int level = 0;
};

// Compresses the file with libzstd at `level` (1..22) in streaming mode, counting the output.
// threads > 0 uses zstd's multi-threaded mode, whose output does not depend on the thread count.
ArtifactSize artifact_size(const std::string& path, int level = 19, int threads = 0);

}  // namespace quest
