#include "train/cpu_engine.h"

#include <algorithm>

#include "core/error.h"
#include "train/model_io.h"

namespace quest {

CpuEngine::CpuEngine(const ModelConfig& config, const QuantConfig& quant, const AdamWConfig& adamw,
                     int64_t batch)
    : model_(config, batch, quantized_linear_factory(quant)) {
  std::vector<ParamGroup> groups;
  for (const auto& t : model_.layout()) {
    if (!groups.empty() && groups.back().decay == t.weight_decay() &&
        groups.back().params + groups.back().size == model_.param(t)) {
      groups.back().size += t.numel();  // merge neighbours with the same decay setting
    } else {
      groups.push_back({model_.param(t), model_.grad(t), t.numel(), t.weight_decay()});
    }
  }
  // Learned quantizer parameters (LSQ step, PACT alpha) get weight decay, as in the reference.
  for (auto& [name, op] : model_.named_linears())
    for (auto& lp : op->learned_params())
      groups.push_back({lp.value.data(), lp.grad.data(), int64_t(lp.value.size()), true});
  adamw_ = std::make_unique<AdamW>(adamw, std::move(groups));
}

double CpuEngine::step(double lr) {
  const double norm = adamw_->step(lr);
  model_.prepare_weights();
  return norm;
}

std::vector<StateArray> CpuEngine::state() {
  std::vector<StateArray> out;
  out.push_back({"params", params()});
  out.push_back({"adam.m", adamw_->m()});
  out.push_back({"adam.v", adamw_->v()});
  for (auto& [name, op] : model_.named_linears())
    for (auto& lp : op->learned_params())
      out.push_back({"quant." + name + "." + lp.name, {lp.value.begin(), lp.value.end()}});
  return out;
}

void CpuEngine::restore(const Checkpoint& ck, bool with_quant_state) {
  const auto params = model_.params();
  const auto& p = ck.array("params", int64_t(params.size()));
  std::copy(p.begin(), p.end(), params.begin());
  // The moments hold the model's parameters first, then the learned quantizer parameters; under a
  // changed quantization only the model's part carries over.
  const int64_t moments = with_quant_state ? adamw_->state_size() : int64_t(params.size());
  for (const char* name : {"adam.m", "adam.v"}) {
    auto it = ck.arrays.find(name);
    QUEST_CHECK(it != ck.arrays.end() && int64_t(it->second.size()) >= moments &&
                    (!with_quant_state || int64_t(it->second.size()) == moments),
                "the checkpoint has no matching optimizer state '{}'", name);
    auto& dst = std::string(name) == "adam.m" ? adamw_->m() : adamw_->v();
    std::copy(it->second.begin(), it->second.begin() + moments, dst.begin());
  }
  adamw_->set_step_count(ck.header.at("adam_step").get<int64_t>());
  if (with_quant_state) {
    restore_learned_quant_params(model_, ck);
  } else {
    // A new quantization's learned parameters were initialized from the random initial weights;
    // 0 makes them initialize again, from the loaded weights (and the next inputs).
    for (auto& [name, op] : model_.named_linears())
      for (auto& lp : op->learned_params()) std::fill(lp.value.begin(), lp.value.end(), 0.0f);
  }
  model_.prepare_weights();
}

}  // namespace quest
