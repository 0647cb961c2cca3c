#pragma once
// A trained model from a checkpoint, for evaluation and generation.
#include <memory>
#include <string>

#include "model/llama.h"
#include "train/checkpoint.h"

namespace quest {

// Restores the learned quantizer parameters (LSQ steps, PACT alphas) saved as
// "quant.<layer>.<name>" arrays.
void restore_learned_quant_params(Model& model, const Checkpoint& ck);

struct LoadedModel {
  std::unique_ptr<Model> model;
  QuantConfig quant;
  std::string tokenizer;  // as recorded by the trainer ("gpt2" when the data named none)
  int64_t step = 0;
};

// Builds a model planned for `batch` sequences from the checkpoint's configuration and weights,
// with its weights prepared (quantized) for inference.
LoadedModel load_model(const std::string& checkpoint_path, int64_t batch = 1);

}  // namespace quest
