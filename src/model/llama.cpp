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
void add_into(float* out, const float* a, const float* b, int64_t n) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}
}  // namespace

Model::Model(const ModelConfig& config, int64_t batch, const LinearFactory& make_linear)
    : config_(config), batch_(batch), layout_(parameter_layout(config)) {
  config_.validate();
  QUEST_CHECK(batch >= 1, "model: batch must be >= 1, got {}", batch);
  const int64_t total = layout_.back().offset + layout_.back().numel();
  params_.assign(total, 0.0f);
  grads_.assign(total, 0.0f);

  const int64_t L = config_.n_layer, d = config_.d_model, H = config_.hidden_dim();
  const int64_t T = config_.seq_len, N = batch * T, nh = config_.n_head();
  const int64_t V = config_.padded_vocab();
  for (int64_t l = 0; l < L; ++l) {
    const std::string p = "layers." + std::to_string(l) + ".";
    linears_.push_back(LayerLinears{make_linear(p + "wqkv", d, 3 * d, N), make_linear(p + "wo", d, d, N),
                                    make_linear(p + "w1", d, H, N), make_linear(p + "w2", d, H, N),
                                    make_linear(p + "w3", H, d, N)});
  }

  // Plan every activation buffer once, then hand out pointers.
  head_chunk_ = std::clamp<int64_t>((int64_t{16} << 20) / V, 1, N);
  const int64_t per_layer = 8 * N * d + 2 * N + 3 * N * H + batch * nh * T * T;
  const int64_t shared = N * d /*final_res*/ + N * d /*lnf*/ + N /*rstdf*/ + N * d /*tmp*/ +
                         N * d /*dres*/ + N * d /*dln*/ + N * d /*dln2*/ + N * d /*datt*/ +
                         3 * N * d /*dqkv*/ + 3 * N * H /*da,db,dg*/ + head_chunk_ * V /*logits*/;
  acts_.assign(L * per_layer + shared, 0.0f);
  float* p = acts_.data();
  auto take = [&p](int64_t n) { float* r = p; p += n; return r; };
  for (int64_t l = 0; l < L; ++l) {
    LayerActs a;
    a.res_in = take(N * d);
    a.ln1 = take(N * d);
    a.rstd1 = take(N);
    a.qkv = take(3 * N * d);
    a.probs = take(batch * nh * T * T);
    a.att = take(N * d);
    a.res_mid = take(N * d);
    a.ln2 = take(N * d);
    a.rstd2 = take(N);
    a.a = take(N * H);
    a.b = take(N * H);
    a.g = take(N * H);
    layer_acts_.push_back(a);
  }
  final_res_ = take(N * d);
  lnf_ = take(N * d);
  rstdf_ = take(N);
  tmp_ = take(N * d);
  dres_ = take(N * d);
  dln_ = take(N * d);
  dln2_ = take(N * d);
  datt_ = take(N * d);
  dqkv_ = take(3 * N * d);
  da_ = take(N * H);
  db_ = take(N * H);
  dg_ = take(N * H);
  logits_ = take(head_chunk_ * V);
}

const ParamTensor& Model::tensor(const std::string& name) const {
  for (const auto& t : layout_)
    if (t.name == name) return t;
  fail("model has no parameter '{}'", name);
}

void Model::init_weights(uint64_t seed) {
  Rng rng(seed);
  const double out_std = config_.init_std / std::sqrt(2.0 * config_.n_layer);
  for (const auto& t : layout_) {
    float* w = param(t);
    if (t.kind == ParamKind::Norm) {
      std::fill(w, w + t.numel(), 1.0f);
      continue;
    }
    const bool is_out = t.name.ends_with(".wo") || t.name.ends_with(".w3");
    const double std = is_out ? out_std : config_.init_std;
    for (int64_t i = 0; i < t.numel(); ++i) w[i] = static_cast<float>(std * rng.normal());
  }
  prepare_weights();
}

void Model::zero_grads() {
  std::fill(grads_.begin(), grads_.end(), 0.0f);
  for (auto& [name, op] : named_linears())
    for (auto& p : op->learned_params()) std::fill(p.grad.begin(), p.grad.end(), 0.0f);
}

std::vector<Model::NamedLinear> Model::named_linears() {
  std::vector<NamedLinear> out;
  for (int64_t l = 0; l < config_.n_layer; ++l) {
    const std::string p = "layers." + std::to_string(l) + ".";
    auto& lin = linears_[l];
    out.push_back({p + "wqkv", &lin.qkv});
    out.push_back({p + "wo", &lin.wo});
    out.push_back({p + "w1", &lin.w1});
    out.push_back({p + "w2", &lin.w2});
    out.push_back({p + "w3", &lin.w3});
  }
  return out;
}

void Model::prepare_weights() {
  for (int64_t l = 0; l < config_.n_layer; ++l) {
    const std::string p = "layers." + std::to_string(l) + ".";
    auto& lin = linears_[l];
    lin.qkv.prepare_weight(param(tensor(p + "wqkv")));
    lin.wo.prepare_weight(param(tensor(p + "wo")));
    lin.w1.prepare_weight(param(tensor(p + "w1")));
    lin.w2.prepare_weight(param(tensor(p + "w2")));
    lin.w3.prepare_weight(param(tensor(p + "w3")));
  }
}

void Model::forward(const int32_t* x, int64_t B, int64_t T) {
  QUEST_CHECK(B >= 1 && B <= batch_, "model: batch {} out of the planned [1, {}]", B, batch_);
  QUEST_CHECK(T >= 1 && T <= config_.seq_len, "model: sequence length {} out of [1, {}]", T,
              config_.seq_len);
  const int64_t N = B * T, d = config_.d_model, H = config_.hidden_dim();
  const int64_t nh = config_.n_head(), hd = config_.head_dim, V = config_.vocab_size;
  for (int64_t i = 0; i < N; ++i)
    QUEST_CHECK(x[i] >= 0 && x[i] < V, "token id {} out of the vocabulary [0, {})", x[i], V);
  const float eps = config_.norm_eps;

  cpu::embedding_forward(layer_acts_[0].res_in, x, param(layout_[0]), N, d);
  const ParamTensor* t = &layout_[1];  // layer tensors follow the embedding in layout order
  for (int64_t l = 0; l < config_.n_layer; ++l, t += 7) {
    LayerActs& a = layer_acts_[l];
    LayerLinears& lin = linears_[l];
    float* res_out = l + 1 < config_.n_layer ? layer_acts_[l + 1].res_in : final_res_;
    cpu::rmsnorm_forward(a.ln1, a.rstd1, a.res_in, param(t[0]), N, d, eps);
    lin.qkv.forward(a.ln1, a.qkv, N);
    cpu::rope_forward(a.qkv, B, T, nh, hd, config_.rope_theta);
    cpu::attention_forward(a.att, a.probs, a.qkv, B, T, nh, hd);
    lin.wo.forward(a.att, tmp_, N);
    add_into(a.res_mid, a.res_in, tmp_, N * d);
    cpu::rmsnorm_forward(a.ln2, a.rstd2, a.res_mid, param(t[3]), N, d, eps);
    lin.w1.forward(a.ln2, a.a, N);
    lin.w2.forward(a.ln2, a.b, N);
    cpu::swiglu_forward(a.g, a.a, a.b, N * H);
    lin.w3.forward(a.g, tmp_, N);
    add_into(res_out, a.res_mid, tmp_, N * d);
  }
  cpu::rmsnorm_forward(lnf_, rstdf_, final_res_, param(tensor("final_norm")), N, d, eps);
}

double Model::head(const int32_t* y, int64_t N, float grad_scale, bool backward, float* losses) {
  const int64_t d = config_.d_model, V = config_.vocab_size, Vp = config_.padded_vocab();
  const ParamTensor& lm = layout_.back();
  for (int64_t i = 0; i < N; ++i)
    QUEST_CHECK(y[i] >= 0 && y[i] < V, "target id {} out of the vocabulary [0, {})", y[i], V);
  double total = 0.0;
  for (int64_t r = 0; r < N; r += head_chunk_) {
    const int64_t n = std::min(head_chunk_, N - r);
    cpu::matmul_forward(logits_, lnf_ + r * d, param(lm), n, d, Vp);
    total += cpu::cross_entropy(backward ? logits_ : nullptr, losses ? losses + r : nullptr,
                                logits_, y + r, n, V, Vp, grad_scale);
    if (backward) cpu::matmul_backward(dln_ + r * d, grad(lm), logits_, lnf_ + r * d, param(lm), n, d, Vp);
  }
  return total;
}

void Model::backward(const int32_t* x, int64_t B, int64_t T) {
  const int64_t N = B * T, d = config_.d_model, H = config_.hidden_dim();
  const int64_t nh = config_.n_head(), hd = config_.head_dim;
  std::fill(dres_, dres_ + N * d, 0.0f);
  cpu::rmsnorm_backward(dres_, grad(tensor("final_norm")), dln_, final_res_,
                        param(tensor("final_norm")), rstdf_, N, d);
  for (int64_t l = config_.n_layer - 1; l >= 0; --l) {
    const ParamTensor* t = &layout_[1 + 7 * l];
    LayerActs& a = layer_acts_[l];
    LayerLinears& lin = linears_[l];
    // res_out = res_mid + w3(g): dres flows on unchanged, and into the MLP.
    lin.w3.backward(dres_, dg_, grad(t[6]), N);
    cpu::swiglu_backward(da_, db_, dg_, a.a, a.b, N * H);
    lin.w1.backward(da_, dln_, grad(t[4]), N);
    lin.w2.backward(db_, dln2_, grad(t[5]), N);
    add_into(dln_, dln_, dln2_, N * d);
    cpu::rmsnorm_backward(dres_, grad(t[3]), dln_, a.res_mid, param(t[3]), a.rstd2, N, d);
    // res_mid = res_in + wo(att)
    lin.wo.backward(dres_, datt_, grad(t[2]), N);
    cpu::attention_backward(dqkv_, datt_, a.qkv, a.probs, B, T, nh, hd);
    cpu::rope_backward(dqkv_, B, T, nh, hd, config_.rope_theta);
    lin.qkv.backward(dqkv_, dln_, grad(t[1]), N);
    cpu::rmsnorm_backward(dres_, grad(t[0]), dln_, a.res_in, param(t[0]), a.rstd1, N, d);
  }
  cpu::embedding_backward(grad(layout_[0]), dres_, x, N, d);
}

double Model::forward_backward(const int32_t* x, const int32_t* y, int64_t B, int64_t T,
                               float grad_scale) {
  forward(x, B, T);
  const double loss = head(y, B * T, grad_scale, /*backward=*/true, nullptr);
  backward(x, B, T);
  return loss;
}

double Model::forward_loss(const int32_t* x, const int32_t* y, int64_t B, int64_t T, float* losses) {
  forward(x, B, T);
  return head(y, B * T, 0.0f, /*backward=*/false, losses);
}

void Model::last_logits(const int32_t* tokens, int64_t T, float* logits) {
  forward(tokens, 1, T);
  const int64_t d = config_.d_model, Vp = config_.padded_vocab();
  cpu::matmul_forward(logits_, lnf_ + (T - 1) * d, param(layout_.back()), 1, d, Vp);
  std::memcpy(logits, logits_, sizeof(float) * config_.vocab_size);
}

}  // namespace quest
