#pragma once
// Gradient alignment (the paper's figure 2): at the same weights and on the same batch, the cosine
// similarity, per linear layer, between the gradient a quantized model computes (its estimator:
// trust mask, STE, ...) and the full-precision gradient.
#include <string>
#include <vector>

#include "data/token_dataset.h"
#include "model/config.h"
#include "quant/quant_spec.h"
#include "train/checkpoint.h"

namespace quest {

struct LayerAlignment {
  std::string layer;  // e.g. "layers.2.w1"
  double cosine;
};

// params: the model's flat parameters (parameter_layout(config)). The batch is the first `batch`
// validation windows of `data`. learned: a checkpoint trained with `quant` whose learned quantizer
// parameters (LSQ steps, PACT alphas) the quantized model uses; without it they are initialized
// from the batch, as at the start of training.
std::vector<LayerAlignment> gradient_alignment(const ModelConfig& config,
                                               const std::vector<float>& params,
                                               const QuantConfig& quant, const TokenDataset& data,
                                               int64_t batch, const Checkpoint* learned = nullptr);

}  // namespace quest
