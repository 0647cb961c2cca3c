#pragma once
// Helpers for tests that need corpus files: zstd compression (optionally with a checksum) and
// JSONL lines.
#include <zstd.h>

#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace quest::test {

inline std::string zstd_compress(std::string_view data, bool checksum = false) {
  ZSTD_CCtx* c = ZSTD_createCCtx();
  ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, 3);
  ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, checksum ? 1 : 0);
  std::string out(ZSTD_compressBound(data.size()), '\0');
  const size_t n = ZSTD_compress2(c, out.data(), out.size(), data.data(), data.size());
  ZSTD_freeCCtx(c);
  if (ZSTD_isError(n)) throw std::runtime_error(ZSTD_getErrorName(n));
  out.resize(n);
  return out;
}

// One JSONL line {"id": i, "text": text}.
inline std::string jsonl_line(int id, const std::string& text) {
  return nlohmann::json{{"id", id}, {"text", text}}.dump() + "\n";
}

inline std::string jsonl(const std::vector<std::string>& docs) {
  std::string out;
  for (size_t i = 0; i < docs.size(); ++i) out += jsonl_line(int(i), docs[i]);
  return out;
}

}  // namespace quest::test
