#pragma once
// SentencePiece models (e.g. Llama-2's tokenizer.model, or one from `quest tokenizer train`)
// through the system's libsentencepiece. Without it (QUEST_HAVE_SENTENCEPIECE undefined) load()
// throws a clear error.
#include <memory>
#include <string>

#include "data/tokenizer.h"

namespace quest {

class SentencePieceTokenizer : public Tokenizer {
 public:
  // Throws quest::Error when the file cannot be read or is not a SentencePiece model, or when the
  // model has no end-of-sentence piece (used as the document separator).
  static std::unique_ptr<SentencePieceTokenizer> load(const std::string& model_path);
  // From a serialized ModelProto (what a .model file holds).
  static std::unique_ptr<SentencePieceTokenizer> from_serialized(const std::string& proto,
                                                                 const std::string& origin);
  ~SentencePieceTokenizer() override;

  std::vector<int32_t> encode(std::string_view text) const override;  // thread-safe
  std::string decode(std::span<const int32_t> tokens) const override;
  int32_t vocab_size() const override;
  int32_t eot_token() const override;  // the model's </s>
  std::string name() const override { return name_; }  // "sentencepiece:<sha256 of the model>"

 private:
  struct Impl;
  SentencePieceTokenizer();
  std::unique_ptr<Impl> impl_;
  std::string name_, origin_;
};

}  // namespace quest
