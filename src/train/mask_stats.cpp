#include "train/mask_stats.h"

namespace quest {

nlohmann::json MaskStatistics::snapshot(Model& model) {
  std::vector<LayerMasks> layers;
  for (auto& [name, op] : model.named_linears()) layers.push_back({name, op->weight_mask(), op->input_mask()});
  return snapshot(layers);
}

nlohmann::json MaskStatistics::snapshot(const std::vector<LayerMasks>& masks) {
  nlohmann::json layers = nlohmann::json::object();
  double w_sum = 0, x_sum = 0, p_sum = 0;
  int n = 0, p_n = 0;
  for (const auto& [name, w, x] : masks) {
    if (!w && !x) continue;
    const double wf = w ? w->fraction() : 0.0, xf = x ? x->fraction() : 0.0;
    nlohmann::json rec = {{"w_masked", wf}, {"x_masked", xf}};
    w_sum += wf;
    x_sum += xf;
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
  if (n == 0) return nullptr;
  nlohmann::json out = {{"layers", layers}, {"mean_w_masked", w_sum / n}, {"mean_x_masked", x_sum / n}};
  if (p_n) out["mean_w_persistence"] = p_sum / p_n;
  return out;
}

}  // namespace quest
