#pragma once
// A split of a tokenized corpus: one or more shards seen as one concatenated token stream.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "data/dataset_meta.h"
#include "data/shard.h"

namespace quest {

class TokenDataset {
 public:
  // DIR/<split>-NNNNNN.bin in order (the files meta.json lists, when it lists them), plus
  // DIR/meta.json's entry for the split when that file exists. Throws when no shard is found or
  // when meta.json's token count disagrees with the shards.
  static TokenDataset open_split(const std::string& dir, const std::string& split);
  // Every file matching a glob pattern (e.g. "data/fineweb_train_*.bin"), in sorted order.
  static TokenDataset open_glob(const std::string& pattern);
  // These files, in this order.
  static TokenDataset open_files(const std::vector<std::string>& paths);
  // Convenience for command lines: a directory -> open_split(spec, split); a pattern with * ? or [
  // -> open_glob; else one shard file.
  static TokenDataset open(const std::string& spec, const std::string& split);

  uint64_t size() const { return total_; }  // tokens in the stream
  // out[k] = stream[begin + k] for k < count, crossing shard boundaries; throws past the end.
  void copy(uint64_t begin, uint64_t count, int32_t* out) const;

  // The split's meta.json entry; nullopt when the shards came without one.
  const std::optional<SplitMeta>& meta() const { return meta_; }
  size_t num_shards() const { return shards_.size(); }
  const Shard& shard(size_t i) const { return shards_[i]; }

 private:
  TokenDataset() = default;
  void add(const std::string& path);

  std::vector<Shard> shards_;
  std::vector<uint64_t> starts_;  // starts_[i] = first stream position of shard i
  uint64_t total_ = 0;
  std::optional<SplitMeta> meta_;
};

}  // namespace quest
