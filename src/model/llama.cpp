#include "model/llama.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "core/rng.h"
#include "ops/cpu_ops.h"

namespace quest {

LinearFactory plain_linear_factory() {
  return [](const std::string&, int64_t in, int64_t out, int64_t max_rows) {
    return LinearOp(in, out, max_rows);
  };
}

LinearFactory quantized_linear_factory(const QuantConfig& quant) {
  return [quant](const std::string&, int64_t in, int64_t out, int64_t max_rows) {
    return quant.quantized() ? LinearOp(in, out, max_rows, quant) : LinearOp(in, out, max_rows);
  };
}

namespace {
const ModelConfig& validated(const ModelConfig& c) {
  c.validate();
  return c;
}
int64_t checked_batch(int64_t batch) {
  QUEST_CHECK(batch >= 1, "model: batch must be >= 1, got {}", batch);
  return batch;
}
}  // namespace

Model::Model(const ModelConfig& config, int64_t batch, const LinearFactory& make_linear)
    : config_(validated(config)),
      batch_(checked_batch(batch)),
      layout_(parameter_layout(config)),
      params_(size_t(layout_.back().offset + layout_.back().numel()), 0.0f),
      grads_(params_.size(), 0.0f),
      graph_(backend_, config, batch, make_linear),
      losses_(size_t(batch * config.seq_len), 0.0f) {}

const ParamTensor& Model::tensor(const std::string& name) const {
  for (const auto& t : layout_)
    if (t.name == name) return t;
  fail("model has no parameter '{}'", name);
}

void init_parameters(const ModelConfig& config, std::span<float> params, uint64_t seed) {
  const auto layout = parameter_layout(config);
  QUEST_CHECK(int64_t(params.size()) == layout.back().offset + layout.back().numel(),
              "init: {} parameters given, the model has {}", params.size(),
              layout.back().offset + layout.back().numel());
  Rng rng(seed);
  const double out_std = config.init_std / std::sqrt(2.0 * config.n_layer);
  for (const auto& t : layout) {
    float* w = params.data() + t.offset;
    if (t.kind == ParamKind::Norm) {
      std::fill(w, w + t.numel(), 1.0f);
      continue;
    }
    const bool is_out = t.name.ends_with(".wo") || t.name.ends_with(".w3");
    const double std = is_out ? out_std : config.init_std;
    for (int64_t i = 0; i < t.numel(); ++i) w[i] = static_cast<float>(std * rng.normal());
  }
}

void Model::init_weights(uint64_t seed) {
  init_parameters(config_, params_, seed);
  prepare_weights();
}

void Model::zero_grads() {
  std::fill(grads_.begin(), grads_.end(), 0.0f);
  for (auto& lin : graph_.linears())
    for (LinearOp* op : {&lin.qkv, &lin.wo, &lin.w1, &lin.w2, &lin.w3})
      for (auto& p : op->learned_params()) std::fill(p.grad.begin(), p.grad.end(), 0.0f);
}

std::vector<Model::NamedLinear> Model::named_linears() {
  std::vector<NamedLinear> out;
  for (int64_t l = 0; l < config_.n_layer; ++l) {
    const std::string p = "layers." + std::to_string(l) + ".";
    auto& lin = graph_.linears()[l];
    out.push_back({p + "wqkv", &lin.qkv});
    out.push_back({p + "wo", &lin.wo});
    out.push_back({p + "w1", &lin.w1});
    out.push_back({p + "w2", &lin.w2});
    out.push_back({p + "w3", &lin.w3});
  }
  return out;
}

void Model::prepare_weights() { graph_.prepare_weights(params_.data()); }

namespace {
void check_tokens(const int32_t* t, int64_t n, int64_t V, const char* what) {
  for (int64_t i = 0; i < n; ++i)
    QUEST_CHECK(t[i] >= 0 && t[i] < V, "{} id {} out of the vocabulary [0, {})", what, t[i], V);
}
}  // namespace

double Model::forward_backward(const int32_t* x, const int32_t* y, int64_t B, int64_t T,
                               float grad_scale) {
  check_tokens(x, B * T, config_.vocab_size, "token");
  check_tokens(y, B * T, config_.vocab_size, "target");
  graph_.forward(params_.data(), x, B, T);
  graph_.head(params_.data(), grads_.data(), y, B * T, grad_scale, losses_.data());
  graph_.backward(params_.data(), grads_.data(), x, B, T);
  double sum = 0.0;
  for (int64_t i = 0; i < B * T; ++i) sum += losses_[i];
  return sum;
}

double Model::forward_loss(const int32_t* x, const int32_t* y, int64_t B, int64_t T, float* losses) {
  check_tokens(x, B * T, config_.vocab_size, "token");
  check_tokens(y, B * T, config_.vocab_size, "target");
  graph_.forward(params_.data(), x, B, T);
  graph_.head(params_.data(), nullptr, y, B * T, 0.0f, losses_.data());
  double sum = 0.0;
  for (int64_t i = 0; i < B * T; ++i) sum += losses_[i];
  if (losses) std::copy_n(losses_.data(), B * T, losses);
  return sum;
}

void Model::last_logits(const int32_t* tokens, int64_t T, float* logits) {
  check_tokens(tokens, T, config_.vocab_size, "token");
  graph_.forward(params_.data(), tokens, 1, T);
  const float* row = graph_.row_logits(params_.data(), T - 1);
  std::memcpy(logits, row, sizeof(float) * config_.vocab_size);
}

}  // namespace quest
