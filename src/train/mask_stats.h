#pragma once
// Trust-mask statistics during training (issue: QuEST's figure of masked fractions): per linear
// layer, the fraction of weight and input entries whose gradient the quantizer masks out, and the
// persistence of the weight masks: the fraction of entries masked at the previous snapshot that are
// still masked now (the paper: about 30% with the Hadamard transform, 69% without).
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "model/llama.h"
#include "quant/mask_bits.h"

namespace quest {

// One linear layer's masks: of its weight (last prepare_weights()) and of its input (last
// forward()); null where that role does not mask.
struct LayerMasks {
  std::string name;
  const MaskBits* weight;
  const MaskBits* input;
};

class MaskStatistics {
 public:
  // Null when no layer masks anything. Fields: layers{name: {w_masked, x_masked, w_persistence}},
  // mean_w_masked, mean_x_masked, mean_w_persistence (when defined).
  nlohmann::json snapshot(const std::vector<LayerMasks>& layers);
  // The CPU model's masks.
  nlohmann::json snapshot(Model& model);

 private:
  std::map<std::string, MaskBits> previous_;
};

}  // namespace quest
