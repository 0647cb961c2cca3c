#pragma once
// GPT-2 byte-level BPE, token for token as the npm package gpt-3-encoder@1.1.4 (a port of OpenAI's
// encoder.py): the GPT-2 pre-tokenizer pattern
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// with JavaScript's \s, run by hand; bytes mapped to tokens; BPE merges by rank.
// "<|endoftext|>" inside text is plain text: encode() never returns eot_token().
// Input that is not valid UTF-8 still encodes and decodes back to the same bytes: each byte that is
// not part of a valid UTF-8 sequence counts as punctuation ("other") for the pattern.
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "data/tokenizer.h"

namespace quest {

// $QUEST_CACHE/gpt2, else $HOME/.cache/quest/gpt2 (where scripts/setup.sh puts the files).
std::string default_gpt2_dir();

class Gpt2Tokenizer : public Tokenizer {
 public:
  // Reads dir/encoder.json (token string -> id) and dir/vocab.bpe (merges, by rank); throws
  // quest::Error when a file is missing or malformed.
  static std::unique_ptr<Gpt2Tokenizer> load(const std::string& dir);
  ~Gpt2Tokenizer() override;

  // Thread-safe; each thread keeps its own cache of the BPE of words it has seen.
  std::vector<int32_t> encode(std::string_view text) const override;
  // The concatenated bytes of the tokens (not necessarily valid UTF-8); an id outside
  // [0, vocab_size()) throws quest::Error.
  std::string decode(std::span<const int32_t> tokens) const override;
  int32_t vocab_size() const override { return static_cast<int32_t>(token_bytes_.size()); }
  int32_t eot_token() const override { return eot_; }
  std::string name() const override { return "gpt2"; }

  // Appends the tokens of text to out (encode() without the allocation of a new vector).
  void encode_append(std::string_view text, std::vector<int32_t>& out) const;
  // The bytes one token stands for.
  const std::string& token_bytes(int32_t id) const;

 private:
  struct Merge {
    uint32_t rank;
    int32_t merged;
  };

  Gpt2Tokenizer() = default;
  void bpe(std::string_view word, std::vector<int32_t>& out) const;
  const Merge* find_merge(int32_t left, int32_t right) const;

  std::vector<std::string> token_bytes_;  // id -> bytes
  int32_t byte_token_[256] = {};          // byte -> id of its one-byte token
  int32_t eot_ = -1;
  // Pair (left id, right id) -> merge, open addressing on a 64-bit key; empty slots hold kNoKey.
  std::vector<uint64_t> merge_keys_;
  std::vector<Merge> merge_vals_;
  uint64_t merge_mask_ = 0;
  uint64_t instance_id_ = 0;  // tells the thread-local word caches of different tokenizers apart
};

}  // namespace quest
