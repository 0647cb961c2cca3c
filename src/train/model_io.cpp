#include "train/model_io.h"

#include <algorithm>

#include "core/error.h"

namespace quest {

void restore_learned_quant_params(Model& model, const Checkpoint& ck) {
  for (auto& [name, op] : model.named_linears())
    for (auto& lp : op->learned_params()) {
      const auto& saved = ck.array("quant." + name + "." + lp.name, int64_t(lp.value.size()));
      std::copy(saved.begin(), saved.end(), lp.value.begin());
    }
}

LoadedModel load_model(const std::string& path, int64_t batch) {
  const Checkpoint ck = load_checkpoint(path);
  LoadedModel out;
  ModelConfig cfg;
  try {
    cfg = ck.header.at("model").get<ModelConfig>();
    out.quant = ck.header.at("quant").get<QuantConfig>();
    out.step = ck.header.value("step", int64_t{0});
    out.tokenizer = ck.header.value("tokenizer", std::string("gpt2"));
  } catch (const nlohmann::json::exception& e) {
    fail("checkpoint '{}' has no valid model configuration: {}", path, e.what());
  }
  out.model = std::make_unique<Model>(cfg, batch, quantized_linear_factory(out.quant));
  const auto params = out.model->params();
  const auto& p = ck.array("params", int64_t(params.size()));
  std::copy(p.begin(), p.end(), params.begin());
  restore_learned_quant_params(*out.model, ck);
  out.model->prepare_weights();
  return out;
}

}  // namespace quest
