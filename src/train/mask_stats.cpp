#include "train/mask_stats.h"

namespace quest {

nlohmann::json MaskStatistics::snapshot(Model& model) {
  nlohmann::json layers = nlohmann::json::object();
  double w_sum = 0, x_sum = 0, p_sum = 0;
  int n = 0, p_n = 0;
  bool any = false;
  for (auto& [name, op] : model.named_linears()) {
    const MaskBits* w = op->weight_mask();
    const MaskBits* x = op->input_mask();
    if (!w && !x) continue;
    any = true;
    nlohmann::json rec = {{"w_masked", op->weight_masked_fraction()}, {"x_masked", op->input_masked_fraction()}};
    w_sum += op->weight_masked_fraction();
    x_sum += op->input_masked_fraction();
    ++n;
    if (w) {
      if (auto it = previous_.find(name); it != previous_.end()) {
        if (auto p = MaskBits::persistence(it->second, *w)) {
          rec["w_persistence"] = *p;
          p_sum += *p;
          ++p_n;
        }
      }
      previous_[name] = *w;
    }
    layers[name] = rec;
  }
  if (!any) return nullptr;
  nlohmann::json out = {{"layers", layers}, {"mean_w_masked", w_sum / n}, {"mean_x_masked", x_sum / n}};
  if (p_n) out["mean_w_persistence"] = p_sum / p_n;
  return out;
}

}  // namespace quest
