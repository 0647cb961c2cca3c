#pragma once
// A tokenizer turns text into token ids and back. Implementations: GPT-2 byte-level BPE
// (gpt2_tokenizer.h) and SentencePiece models (sentencepiece_tokenizer.h).
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace quest {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::vector<int32_t> encode(std::string_view text) const = 0;
  virtual std::string decode(std::span<const int32_t> tokens) const = 0;
  // Number of token ids (the model pads its embedding rows to a multiple of 128 above this).
  virtual int32_t vocab_size() const = 0;
  // The document separator (GPT-2: <|endoftext|> = 50256).
  virtual int32_t eot_token() const = 0;
  // Identity recorded in shard metadata and checkpoints, e.g. "gpt2" or "sentencepiece:<sha256>".
  virtual std::string name() const = 0;
  // encode() is safe to call from several threads at once.
};

}  // namespace quest
