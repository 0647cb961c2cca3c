#pragma once
// The Llama-type model (QUEST_SPEC.md section 5), written once over the op interface: embedding ->
// blocks (pre-norm attention and SwiGLU MLP, each with a residual) -> final RMSNorm -> lm_head ->
// cross-entropy, then the same in reverse with explicit backward calls. Parameters and gradients
// are flat fp32 buffers (parameter_layout gives each tensor's place); activations are planned once
// for a micro-batch of [batch, seq_len] tokens, so a training step allocates nothing.
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "model/config.h"
#include "quant/linear_op.h"

namespace quest {

// Builds the product op of one linear layer; the quantizers plug in here.
using LinearFactory = std::function<LinearOp(const std::string& name, int64_t in, int64_t out,
                                             int64_t max_rows)>;
LinearFactory plain_linear_factory();
// Every linear layer in the blocks quantized by `quant` (QUEST_SPEC.md section 1).
LinearFactory quantized_linear_factory(const QuantConfig& quant);

struct LayerLinears {
  LinearOp qkv, wo, w1, w2, w3;
};

class Model {
 public:
  Model(const ModelConfig& config, int64_t batch, const LinearFactory& linears = plain_linear_factory());

  const ModelConfig& config() const { return config_; }
  int64_t batch() const { return batch_; }
  const std::vector<ParamTensor>& layout() const { return layout_; }
  std::span<float> params() { return params_; }
  std::span<const float> params() const { return params_; }
  std::span<float> grads() { return grads_; }
  float* param(const ParamTensor& t) { return params_.data() + t.offset; }
  const float* param(const ParamTensor& t) const { return params_.data() + t.offset; }
  float* grad(const ParamTensor& t) { return grads_.data() + t.offset; }
  const ParamTensor& tensor(const std::string& name) const;

  // Weights N(0, init_std); attention-out and MLP-down N(0, init_std / sqrt(2 L)); norms 1.
  void init_weights(uint64_t seed);
  void zero_grads();
  // Called once per optimizer step after the weights change: (re)quantizes the linear weights.
  void prepare_weights();

  // One micro-batch: tokens x, targets y, both [B, T] with B <= batch(), T <= seq_len. Adds
  // grad_scale * d(sum of token losses) to the gradients and returns the sum of token losses.
  double forward_backward(const int32_t* x, const int32_t* y, int64_t B, int64_t T, float grad_scale);
  // The sum of token losses without gradients; per-token losses into `losses` when not null.
  double forward_loss(const int32_t* x, const int32_t* y, int64_t B, int64_t T,
                      float* losses = nullptr);
  // Logits [vocab_size] of the last position of one sequence of T tokens, by a full forward pass.
  void last_logits(const int32_t* tokens, int64_t T, float* logits);

  std::vector<LayerLinears>& linears() { return linears_; }
  // Every linear layer with its parameter name ("layers.3.w1"), in layout order.
  struct NamedLinear {
    std::string name;
    LinearOp* op;
  };
  std::vector<NamedLinear> named_linears();
  size_t activation_bytes() const { return acts_.size() * sizeof(float); }

 private:
  struct LayerActs {
    float *res_in, *ln1, *rstd1, *qkv, *probs, *att, *res_mid, *ln2, *rstd2, *a, *b, *g;
  };
  void forward(const int32_t* x, int64_t B, int64_t T);
  // Runs lm_head + cross-entropy over row chunks; with gradients when grad_scale != 0.
  double head(const int32_t* y, int64_t N, float grad_scale, bool backward, float* losses);
  void backward(const int32_t* x, int64_t B, int64_t T);

  ModelConfig config_;
  int64_t batch_;
  std::vector<ParamTensor> layout_;
  std::vector<float> params_, grads_;
  std::vector<LayerLinears> linears_;
  std::vector<float> acts_;  // every activation, planned once
  std::vector<LayerActs> layer_acts_;
  float *final_res_, *lnf_, *rstdf_, *tmp_, *dres_, *dln_, *dln2_, *datt_, *dqkv_, *da_, *db_,
      *dg_, *logits_;
  int64_t head_chunk_;
};

}  // namespace quest
