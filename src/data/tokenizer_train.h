#pragma once
// `quest tokenizer train`: a SentencePiece BPE model (byte fallback on, so any text round-trips)
// trained on a seeded sample of a corpus's lines, for small models that want small vocabularies.
#include <cstdint>
#include <string>
#include <vector>

#include "data/text_source.h"

namespace quest {

struct TokenizerTrainOptions {
  std::vector<std::string> inputs;  // files, directories, glob patterns
  TextSourceOptions source;
  std::string output;               // the .model file to write
  int vocab_size = 8192;
  uint64_t max_sentences = 1'000'000;  // lines sampled uniformly (reservoir) from the corpus
  uint64_t seed = 1337;
  double character_coverage = 0.9995;  // rarer characters are left to byte fallback
  int threads = 0;                     // 0 = all cores
  bool overwrite = false;
};

struct TokenizerTrainReport {
  uint64_t documents = 0, lines = 0, sampled_lines = 0, sampled_bytes = 0, skipped_bad = 0;
  int vocab_size = 0;
  std::string name;  // "sentencepiece:<sha256>"
  double seconds = 0;
};

// Throws quest::Error on bad input, an empty corpus, an existing output without overwrite, or when
// SentencePiece refuses (e.g. a vocabulary too large for the sample).
TokenizerTrainReport train_sentencepiece(const TokenizerTrainOptions& options);

}  // namespace quest
