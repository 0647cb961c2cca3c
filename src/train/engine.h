#pragma once
// What the trainer drives: a model with its gradients and optimizer on one device. The CPU
// engine (cpu_engine.h) is the fp32 reference; the CUDA engine (cuda_engine.h) runs the same
// LlamaGraph in bf16 with fp32 master weights. The trainer, checkpoints and logs are the same for
// both, so a checkpoint written by one loads in the other.
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <vector>

#include "dist/communicator.h"
#include "model/config.h"
#include "quant/quant_spec.h"
#include "train/adamw.h"
#include "train/checkpoint.h"

namespace quest {

class Model;

// A host copy of one state array, as the checkpoint stores it.
struct StateArray {
  std::string name;  // "params", "adam.m", "adam.v", "quant.<layer>.<param>"
  std::vector<float> data;
};

class Engine {
 public:
  virtual ~Engine() = default;
  virtual std::string device() const = 0;  // "cpu" or "cuda:<name>"

  virtual void init_weights(uint64_t seed) = 0;
  virtual void zero_grads() = 0;
  // One micro-batch of host tokens [B, T]: adds grad_scale * d(sum of token losses) to the
  // gradients; returns the sum of token losses.
  virtual double forward_backward(const int32_t* x, const int32_t* y, int64_t B, int64_t T,
                                  float grad_scale) = 0;
  // The sum of token losses, without gradients; with `losses` also each token's loss there
  // ([B, T], host memory). Any B <= batch and T <= seq_len (evaluation pads to the longest request).
  virtual double forward_loss(const int32_t* x, const int32_t* y, int64_t B, int64_t T,
                              float* losses = nullptr) = 0;
  // Clips the global gradient norm, updates the weights with AdamW at `lr` and re-quantizes
  // them; returns the norm before clipping.
  virtual double step(double lr) = 0;

  virtual int64_t adam_steps() const = 0;
  // params, adam.m, adam.v and the learned quantizer parameters, copied to the host.
  virtual std::vector<StateArray> state() = 0;
  // Restores the parameters and the optimizer's moments (and, when with_quant_state, the learned
  // quantizer parameters and their moments).
  virtual void restore(const Checkpoint& ck, bool with_quant_state) = 0;
  // Takes a trained model (a checkpoint's or a packed export's, export/model_file.h) for inference:
  // its parameters and learned quantizer parameters, and, for each layer whose product weight was
  // installed as it stands (LinearOp::product_weight_is_fixed: a packed export's codes), that
  // weight instead of the master weight quantized again. The model must have this engine's
  // configuration and quantization. The optimizer state is left as it is.
  virtual void load_model(Model& model) = 0;
  // The flat fp32 parameters (parameter_layout order), copied to the host.
  virtual std::vector<float> params() = 0;
  // Mask statistics of the last step (mask_stats.h's JSON), null when nothing masks.
  virtual nlohmann::json mask_statistics() = 0;
  // Waits for the device's queued work (for timing) and adds its device times to the op profile
  // when that is enabled (ops/op_profile.h). The CPU's work is done when a call returns.
  virtual void synchronize() {}

  // Data-parallel training (ZeRO-1) over comm's ranks, each engine on its slice of the batch:
  // from then on step() sums the gradients over the ranks, clips by the norm of the whole
  // gradient, updates this rank's shard of the optimizer state and gathers the weights; state()
  // becomes a collective call returning the whole state on every rank, and restore() keeps this
  // rank's shard. The default accepts a world of one process only and otherwise throws (an engine
  // that has no data-parallel step yet).
  virtual void set_communicator(Communicator& comm);
  // How many forward_backward() calls each step takes (after zero_grads()): a data-parallel
  // engine then starts summing a layer's gradients over the ranks while the backward pass of the
  // last one is still running. 1 when never called.
  virtual void set_micro_batches(int /*count*/) {}
};

// How an engine computes, where that is a choice that leaves the method as it is. The CPU
// engine has one way and ignores all but local_rank.
struct EngineOptions {
  int local_rank = 0;  // the GPU of this node (a data-parallel job runs one rank per GPU)
  // CUDA: forward products of the quantized layers on int8 tensor cores where both quantizers
  // give integer codes (CudaLinearOp::use_lowbit_product); off: bf16 products of the
  // dequantized operands.
  bool lowbit_product = true;
  // CUDA: w1 and w2 quantize their common input once (stateless quantizers of one spec).
  bool share_input_quantization = true;
};

// "cpu", "cuda" or "auto" (the GPU when one is present).
std::unique_ptr<Engine> make_engine(const std::string& device, const ModelConfig& model,
                                    const QuantConfig& quant, const AdamWConfig& adamw,
                                    int64_t batch, const EngineOptions& options = {});
bool cuda_available();
// The device "cpu", "cuda" or "auto" stands for here: "cpu" or "cuda". Throws a clear error for
// "cuda" without a GPU or without the CUDA backend, and for an unknown name.
std::string resolve_device(const std::string& device);
// Throws unless `model` has `config` and every linear layer's quantization is `quant` (what
// Engine::load_model needs).
void check_loadable(Model& model, const ModelConfig& config, const QuantConfig& quant);

}  // namespace quest
