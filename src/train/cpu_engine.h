#pragma once
// The fp32 reference engine: Model + AdamW on the CPU.
#include "model/llama.h"
#include "train/engine.h"
#include "train/mask_stats.h"

namespace quest {

class CpuEngine final : public Engine {
 public:
  CpuEngine(const ModelConfig& model, const QuantConfig& quant, const AdamWConfig& adamw, int64_t batch);
  std::string device() const override { return "cpu"; }
  void init_weights(uint64_t seed) override { model_.init_weights(seed); }
  void zero_grads() override { model_.zero_grads(); }
  double forward_backward(const int32_t* x, const int32_t* y, int64_t B, int64_t T, float grad_scale) override {
    return model_.forward_backward(x, y, B, T, grad_scale);
  }
  double forward_loss(const int32_t* x, const int32_t* y, int64_t B, int64_t T) override {
    return model_.forward_loss(x, y, B, T);
  }
  double step(double lr) override;
  int64_t adam_steps() const override { return adamw_->step_count(); }
  std::vector<StateArray> state() override;
  void restore(const Checkpoint& ck, bool with_quant_state) override;
  std::vector<float> params() override { return {model_.params().begin(), model_.params().end()}; }
  nlohmann::json mask_statistics() override { return mask_stats_.snapshot(model_); }

  Model& model() { return model_; }

 private:
  Model model_;
  std::unique_ptr<AdamW> adamw_;
  MaskStatistics mask_stats_;
};

}  // namespace quest
