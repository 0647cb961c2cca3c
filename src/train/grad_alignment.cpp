#include "train/grad_alignment.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "data/sampler.h"
#include "model/llama.h"
#include "train/model_io.h"

namespace quest {

namespace {
std::vector<float> gradient(const ModelConfig& config, const std::vector<float>& params,
                            const QuantConfig& quant, const std::vector<int32_t>& x,
                            const std::vector<int32_t>& y, int64_t batch, const Checkpoint* learned) {
  Model model(config, batch, quantized_linear_factory(quant));
  QUEST_CHECK(model.params().size() == params.size(), "alignment: {} parameters given, the model has {}",
              params.size(), model.params().size());
  std::copy(params.begin(), params.end(), model.params().begin());
  if (learned) restore_learned_quant_params(model, *learned);
  model.prepare_weights();
  model.zero_grads();
  const int64_t T = config.seq_len;
  model.forward_backward(x.data(), y.data(), batch, T, 1.0f / float(batch * T));
  return {model.grads().begin(), model.grads().end()};
}
}  // namespace

std::vector<LayerAlignment> gradient_alignment(const ModelConfig& config,
                                               const std::vector<float>& params,
                                               const QuantConfig& quant, const TokenDataset& data,
                                               int64_t batch, const Checkpoint* learned) {
  const int64_t T = config.seq_len;
  ValidationWindows windows(data, T);
  QUEST_CHECK(int64_t(windows.count()) >= batch, "alignment: the data holds {} windows, {} asked for",
              windows.count(), batch);
  std::vector<int32_t> x(batch * T), y(batch * T);
  windows.get_batch(0, batch, x.data(), y.data());
  if (learned)
    QUEST_CHECK(learned->header.at("quant").get<QuantConfig>().same_quantization(quant),
                "alignment: the checkpoint's learned quantizer parameters belong to another quantization");
  const auto g_quant = gradient(config, params, quant, x, y, batch, learned);
  const auto g_full = gradient(config, params, QuantConfig::none(), x, y, batch, nullptr);
  std::vector<LayerAlignment> out;
  for (const auto& t : parameter_layout(config)) {
    if (t.kind != ParamKind::Linear) continue;
    double dot = 0, nq = 0, nf = 0;
    for (int64_t i = t.offset; i < t.offset + t.numel(); ++i) {
      dot += double(g_quant[i]) * g_full[i];
      nq += double(g_quant[i]) * g_quant[i];
      nf += double(g_full[i]) * g_full[i];
    }
    out.push_back({t.name, nq > 0 && nf > 0 ? dot / std::sqrt(nq * nf) : 0.0});
  }
  return out;
}

}  // namespace quest
