#pragma once
// One place that turns a tokenizer name from a command line or meta.json into a tokenizer.
#include <memory>
#include <string>

#include "data/tokenizer.h"

namespace quest {

// "gpt2": GPT-2 BPE from the set-up's cache (default_gpt2_dir()); "gpt2:DIR": from DIR (holding
// encoder.json and vocab.bpe); a path ending in ".model": a SentencePiece model. Throws
// quest::Error naming the accepted forms for anything else.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& spec);

}  // namespace quest
