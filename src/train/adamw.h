#pragma once
// AdamW with fp32 moments (QUEST_SPEC.md section 6: betas 0.9/0.95, eps 1e-8, decoupled weight
// decay 0.1 on linear weights only), and global gradient-norm clipping. Updates follow PyTorch's
// torch.optim.AdamW exactly (decay first, bias-corrected moments, eps added after the square root).
#include <cstdint>
#include <span>
#include <vector>

namespace quest {

struct AdamWConfig {
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weight_decay = 0.1;
  double grad_clip = 1.0;  // 0 = no clipping
};

// A contiguous slice of the parameters sharing one weight-decay setting.
struct ParamGroup {
  float* params;
  float* grads;
  int64_t size;
  bool decay;
};

class AdamW {
 public:
  AdamW(const AdamWConfig& cfg, std::vector<ParamGroup> groups);
  // Global L2 norm of all gradients (accumulated in double, deterministic).
  double grad_norm() const;
  // Clips (scale = min(1, clip / (norm + 1e-6))), then updates every group; step count += 1.
  // Returns the pre-clipping gradient norm.
  double step(double lr);
  // The same update with a norm computed elsewhere (data parallel: the norm of the whole
  // gradient, while this optimizer holds one rank's shard).
  void apply(double lr, double norm);

  int64_t step_count() const { return t_; }
  std::vector<float>& m() { return m_; }
  std::vector<float>& v() { return v_; }
  void set_step_count(int64_t t) { t_ = t; }
  int64_t state_size() const { return static_cast<int64_t>(m_.size()); }

 private:
  AdamWConfig cfg_;
  std::vector<ParamGroup> groups_;
  std::vector<float> m_, v_;  // all groups, concatenated in group order
  int64_t t_ = 0;
};

}  // namespace quest
