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
#include "model/cpu_backend.h"
#include "model/llama_graph.h"
#include "quant/linear_op.h"

namespace quest {

// Builds the product op of one linear layer; the quantizers plug in here.
using LinearFactory = LlamaGraph<CpuBackend>::LinearFactory;
LinearFactory plain_linear_factory();
// Every linear layer in the blocks quantized by `quant` (QUEST_SPEC.md section 1).
LinearFactory quantized_linear_factory(const QuantConfig& quant);

using LayerLinears = LayerLinearsT<CpuBackend>;

// The spec's initialization (section 5) into a flat parameter buffer of parameter_layout(config):
// linears and the embedding N(0, init_std), attention-out and MLP-down N(0, init_std / sqrt(2 L)),
// norms 1. Every backend draws the same numbers for the same seed.
void init_parameters(const ModelConfig& config, std::span<float> params, uint64_t seed);

// The model on the CPU (fp32): parameters, gradients and the graph's planned activations.
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

  std::deque<LayerLinears>& linears() { return graph_.linears(); }
  // Every linear layer with its parameter name ("layers.3.w1"), in layout order.
  struct NamedLinear {
    std::string name;
    LinearOp* op;
  };
  std::vector<NamedLinear> named_linears();

 private:
  ModelConfig config_;
  int64_t batch_;
  std::vector<ParamTensor> layout_;
  std::vector<float> params_, grads_;
  CpuBackend backend_;
  LlamaGraph<CpuBackend> graph_;
  std::vector<float> losses_;  // per-token losses of the last micro-batch
};

}  // namespace quest
