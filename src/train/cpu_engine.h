#pragma once
// The fp32 reference engine: Model + AdamW on the CPU.
#include "model/llama.h"
#include "train/engine.h"
#include "train/mask_stats.h"
#include "train/zero_adamw.h"

namespace quest {

class CpuEngine final : public Engine {
 public:
  CpuEngine(const ModelConfig& model, const QuantConfig& quant, const AdamWConfig& adamw, int64_t batch);
  std::string device() const override { return "cpu"; }
  void init_weights(uint64_t seed) override { model_.init_weights(seed); }
  void zero_grads() override { model_.zero_grads(); }
  double forward_backward(const int32_t* x, const int32_t* y, int64_t B, int64_t T, float grad_scale) override;
  double forward_loss(const int32_t* x, const int32_t* y, int64_t B, int64_t T,
                      float* losses = nullptr) override {
    return model_.forward_loss(x, y, B, T, losses);
  }
  double step(double lr) override;
  int64_t adam_steps() const override;
  std::vector<StateArray> state() override;
  void restore(const Checkpoint& ck, bool with_quant_state) override;
  void load_model(Model& model) override;
  std::vector<float> params() override { return {model_.params().begin(), model_.params().end()}; }
  nlohmann::json mask_statistics() override { return mask_stats_.snapshot(model_); }
  void set_communicator(Communicator& comm) override;

  Model& model() { return model_; }

 private:
  bool has_uninitialized_quant_params();
  Model model_;
  QuantConfig quant_;
  std::vector<ParamGroup> groups_;   // every trainable array, in optimizer-state order
  std::unique_ptr<AdamW> adamw_;     // one process: the whole optimizer state
  std::unique_ptr<ZeroAdamW> zero_;  // data parallel: this rank's shard of it (adamw_ is null)
  AdamWConfig adamw_config_;
  Communicator* comm_ = nullptr;     // set for data parallel only
  MaskStatistics mask_stats_;
};

}  // namespace quest
