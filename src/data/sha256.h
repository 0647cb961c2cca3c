#pragma once
// SHA-256 (FIPS 180-4), to name a SentencePiece model by its content in shard metadata and
// checkpoints: the same model file gives the same name wherever it lives.
#include <string>
#include <string_view>

namespace quest {

// Lower-case hex digest of the bytes.
std::string sha256_hex(std::string_view bytes);

}  // namespace quest
