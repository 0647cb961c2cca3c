#pragma once
// meta.json beside the shards: which tokenizer made them and how much text each split holds, so
// that training can check the vocabulary and report exact bits per byte
// (bpb = loss_per_token * tokens / text_bytes / ln 2). `quest prepare` writes it; every field is
// optional on reading, since shards may come from elsewhere (e.g. llm.c's FineWeb shards).
//
// Layout:
// {"format": "quest-token-shards", "format_version": 1, "tokenizer": "gpt2", "vocab_size": 50257,
//  "eot_token": 50256, "eot_position": "before", "token_bytes": 2,
//  "splits": {"train": {"tokens": N, "text_bytes": N, "documents": N, "skipped_bad": N,
//                       "files": ["train-000000.bin", ...]}, "val": {...}}, ...}
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace quest {

inline constexpr const char* kMetaFileName = "meta.json";

// What meta.json says about one split (plus the dataset-wide fields).
struct SplitMeta {
  std::optional<std::string> tokenizer;     // e.g. "gpt2" or "sentencepiece:<sha256>"
  std::optional<int32_t> vocab_size;
  std::optional<int32_t> eot_token;
  std::optional<std::string> eot_position;  // "before" or "after" each document
  std::optional<uint64_t> text_bytes;       // UTF-8 bytes of the split's documents (no separators)
  std::optional<uint64_t> documents;
  std::optional<uint64_t> tokens;           // including separators
  std::optional<uint64_t> skipped_bad;      // bad records skipped with --skip-bad
  std::vector<std::string> files;           // shard file names relative to the directory
};

// Reads DIR/meta.json's entry for `split`; nullopt when DIR/meta.json does not exist. Throws
// quest::Error when it exists but is not valid JSON or has fields of the wrong type.
std::optional<SplitMeta> read_split_meta(const std::string& dir, const std::string& split);

}  // namespace quest
