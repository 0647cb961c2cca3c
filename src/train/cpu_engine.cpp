#include "train/cpu_engine.h"

#include <algorithm>

#include "core/error.h"
#include "train/model_io.h"

namespace quest {

CpuEngine::CpuEngine(const ModelConfig& config, const QuantConfig& quant, const AdamWConfig& adamw,
                     int64_t batch)
    : model_(config, batch, quantized_linear_factory(quant)), quant_(quant) {
  std::vector<ParamGroup>& groups = groups_;
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
  adamw_ = std::make_unique<AdamW>(adamw, groups);
  adamw_config_ = adamw;
}

void CpuEngine::set_communicator(Communicator& comm) {
  if (comm.size() == 1 || zero_) return;
  comm_ = &comm;
  // The state built so far (normally none) carries over into this rank's shard.
  zero_ = std::make_unique<ZeroAdamW>(adamw_config_, groups_, comm);
  zero_->set_moments(adamw_->m(), adamw_->v());
  zero_->set_step_count(adamw_->step_count());
  adamw_.reset();
}

bool CpuEngine::has_uninitialized_quant_params() {
  for (auto& [name, op] : model_.named_linears())
    for (auto& lp : op->learned_params())
      for (float v : lp.value)
        if (v == 0.0f) return true;
  return false;
}

double CpuEngine::forward_backward(const int32_t* x, const int32_t* y, int64_t B, int64_t T,
                                   float grad_scale) {
  // Learned quantizer parameters (LSQ, PACT) initialize from the first inputs they see. One
  // process sees the global batch's first rows first; here those are rank 0's, so every rank
  // initializes from rank 0's micro-batch (a forward without gradients), as one process would.
  if (comm_ && has_uninitialized_quant_params()) {
    std::vector<int32_t> x0(x, x + B * T), y0(y, y + B * T);
    comm_->broadcast(x0.data(), int64_t(x0.size() * sizeof(int32_t)), 0);
    comm_->broadcast(y0.data(), int64_t(y0.size() * sizeof(int32_t)), 0);
    model_.forward_loss(x0.data(), y0.data(), B, T);
  }
  return model_.forward_backward(x, y, B, T, grad_scale);
}

double CpuEngine::step(double lr) {
  const double norm = zero_ ? zero_->step(lr) : adamw_->step(lr);
  model_.prepare_weights();
  return norm;
}

int64_t CpuEngine::adam_steps() const {
  return zero_ ? zero_->step_count() : adamw_->step_count();
}

std::vector<StateArray> CpuEngine::state() {
  std::vector<StateArray> out;
  out.push_back({"params", params()});
  out.push_back({"adam.m", zero_ ? zero_->gather_m() : adamw_->m()});
  out.push_back({"adam.v", zero_ ? zero_->gather_v() : adamw_->v()});
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
  const int64_t state_size = zero_ ? zero_->state_size() : adamw_->state_size();
  const int64_t moments = with_quant_state ? state_size : int64_t(params.size());
  std::span<const float> saved[2];
  for (int k = 0; k < 2; ++k) {
    const char* name = k == 0 ? "adam.m" : "adam.v";
    auto it = ck.arrays.find(name);
    QUEST_CHECK(it != ck.arrays.end() && int64_t(it->second.size()) >= moments &&
                    (!with_quant_state || int64_t(it->second.size()) == moments),
                "the checkpoint has no matching optimizer state '{}'", name);
    saved[k] = std::span<const float>(it->second).first(size_t(moments));
  }
  const int64_t adam_step = ck.header.at("adam_step").get<int64_t>();
  if (zero_) {
    zero_->set_moments(saved[0], saved[1]);  // this rank's shard; the rest starts at zero
    zero_->set_step_count(adam_step);
  } else {
    std::copy(saved[0].begin(), saved[0].end(), adamw_->m().begin());
    std::copy(saved[1].begin(), saved[1].end(), adamw_->v().begin());
    adamw_->set_step_count(adam_step);
  }
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

void CpuEngine::load_model(Model& src) {
  check_loadable(src, model_.config(), quant_);
  const auto from = src.params();
  std::copy(from.begin(), from.end(), model_.params().begin());
  auto src_ops = src.named_linears(), ops = model_.named_linears();
  for (size_t i = 0; i < ops.size(); ++i) {
    auto src_lp = src_ops[i].op->learned_params(), lp = ops[i].op->learned_params();
    for (size_t k = 0; k < lp.size(); ++k) std::copy(src_lp[k].value.begin(), src_lp[k].value.end(), lp[k].value.begin());
  }
  model_.prepare_weights();
  for (size_t i = 0; i < ops.size(); ++i)
    if (src_ops[i].op->product_weight_is_fixed()) ops[i].op->set_product_weight(src_ops[i].op->product_weight());
}

}  // namespace quest
