#include "data/load_tokenizer.h"

#include "core/error.h"
#include "data/gpt2_tokenizer.h"
#include "data/sentencepiece_tokenizer.h"

namespace quest {

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& spec) {
  if (spec == "gpt2") return Gpt2Tokenizer::load(default_gpt2_dir());
  if (spec.rfind("gpt2:", 0) == 0) return Gpt2Tokenizer::load(spec.substr(5));
  if (spec.size() > 6 && spec.compare(spec.size() - 6, 6, ".model") == 0)
    return SentencePieceTokenizer::load(spec);
  fail("unknown tokenizer '{}': expected \"gpt2\", \"gpt2:DIR\" or a SentencePiece model file "
       "ending in .model",
       spec);
}

}  // namespace quest
