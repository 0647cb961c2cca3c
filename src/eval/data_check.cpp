#include "eval/data_check.h"

#include "core/error.h"

namespace quest {

void check_data_matches_model(const std::string& model_tokenizer, const ModelConfig& model,
                              const TokenDataset& data) {
  const auto& meta = data.meta();
  if (!meta) return;  // shards from elsewhere: nothing recorded to compare
  QUEST_CHECK(!meta->tokenizer || *meta->tokenizer == model_tokenizer,
              "tokenizer mismatch: the data was tokenized with '{}' but the model with '{}'",
              meta->tokenizer.value_or(""), model_tokenizer);
  QUEST_CHECK(!meta->vocab_size || *meta->vocab_size <= model.vocab_size,
              "tokenizer mismatch: the data's vocabulary has {} tokens, the model's {}",
              meta->vocab_size.value_or(0), model.vocab_size);
}

void check_tokenizer_matches_model(const std::string& model_tokenizer, const ModelConfig& model,
                                   const Tokenizer& tokenizer) {
  QUEST_CHECK(tokenizer.name() == model_tokenizer,
              "tokenizer mismatch: the model was trained with '{}', this tokenizer is '{}'",
              model_tokenizer, tokenizer.name());
  QUEST_CHECK(tokenizer.vocab_size() <= model.vocab_size,
              "tokenizer mismatch: the tokenizer has {} tokens, the model's vocabulary {}",
              tokenizer.vocab_size(), model.vocab_size);
}

}  // namespace quest
