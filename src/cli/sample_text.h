#pragma once
// Sampling text from a model in the CLI: prompt -> tokens -> generate -> text, streamed to stdout.
#include <memory>
#include <string>

#include "data/tokenizer.h"
#include "model/generate.h"

namespace quest::cli {

// The tokenizer a dataset or checkpoint names ("gpt2", or a SentencePiece model path).
std::unique_ptr<Tokenizer> tokenizer_for(const std::string& name);

// Prints the prompt and its continuation to stdout as tokens arrive.
void print_sample(Model& model, const Tokenizer& tokenizer, const std::string& prompt,
                  const SampleOptions& opt);

}  // namespace quest::cli
