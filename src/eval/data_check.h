#pragma once
// The checks that a model and the data or tokenizer it is evaluated with belong together.
#include <string>

#include "data/token_dataset.h"
#include "data/tokenizer.h"
#include "model/config.h"

namespace quest {

// Throws quest::Error when the split's meta.json names another tokenizer than the model's, or a
// vocabulary larger than the model's.
void check_data_matches_model(const std::string& model_tokenizer, const ModelConfig& model,
                              const TokenDataset& data);
// Throws when the tokenizer is not the model's (by name) or has more tokens than the model.
void check_tokenizer_matches_model(const std::string& model_tokenizer, const ModelConfig& model,
                                   const Tokenizer& tokenizer);

}  // namespace quest
