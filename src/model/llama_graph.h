#pragma once
// The Llama computation, written once for every backend (QUEST_SPEC.md section 5):
//   embedding -> L x [x += Attn(RMSNorm(x)); x += MLP(RMSNorm(x))] -> RMSNorm -> lm_head -> loss,
// then the same in reverse with explicit backward calls.
//
// A backend B supplies the buffer types and the ops (cpu_backend.h: fp32 on the CPU;
// cuda_backend.h: bf16 activations on the GPU), all with the contracts of ops/cpu_ops.h:
//   B::Act      activation element (float | bf16)     B::Weight  weight element the ops read
//   B::Res      the residual stream and its gradient (float on both backends)
//   B::Linear   a linear layer's product with its quantizer slot (quant/linear_op.h semantics)
//   B::Buffer   RAII storage from alloc_act / alloc_res / alloc_f32
// Every activation is planned in the constructor for micro-batches of up to [batch, seq_len]
// tokens, so forward and backward allocate nothing.
#include <algorithm>
#include <cmath>
#include <deque>
#include <functional>
#include <string>
#include <type_traits>
#include <vector>

#include "core/error.h"
#include "model/config.h"

namespace quest {

template <class Backend>
struct LayerLinearsT {
  typename Backend::Linear qkv, wo, w1, w2, w3;
};

template <class Backend>
class LlamaGraph {
 public:
  using Act = typename Backend::Act;
  using Res = typename Backend::Res;
  using Weight = typename Backend::Weight;
  using Linear = typename Backend::Linear;
  using LinearFactory =
      std::function<Linear(const std::string& name, int64_t in, int64_t out, int64_t max_rows)>;

  LlamaGraph(Backend& backend, const ModelConfig& config, int64_t batch, const LinearFactory& make_linear)
      : b_(backend), c_(config), batch_(batch), layout_(parameter_layout(config)) {
    const int64_t L = c_.n_layer, d = c_.d_model, H = c_.hidden_dim(), T = c_.seq_len;
    const int64_t N = batch * T, nh = c_.n_head(), Vp = c_.padded_vocab();
    for (int64_t l = 0; l < L; ++l) {
      const std::string p = "layers." + std::to_string(l) + ".";
      linears_.emplace_back(LayerLinearsT<Backend>{make_linear(p + "wqkv", d, 3 * d, N), make_linear(p + "wo", d, d, N),
                                          make_linear(p + "w1", d, H, N), make_linear(p + "w2", d, H, N),
                                          make_linear(p + "w3", H, d, N)});
    }
    // Row chunks of the head, as even as possible: a short last chunk would run its products at a
    // fraction of the GEMM rate, and every chunk re-reads and re-writes the fp32 lm_head gradient.
    const int64_t max_rows = std::clamp<int64_t>(Backend::kHeadChunkElements / Vp, 1, N);
    const int64_t chunks = (N + max_rows - 1) / max_rows;
    head_chunk_ = (N + chunks - 1) / chunks;
    for (int64_t l = 0; l < L; ++l) {
      Layer a;
      a.res_in = b_.alloc_res(N * d);
      a.ln1 = b_.alloc_act(N * d);
      a.rstd1 = b_.alloc_f32(N);
      a.qkv = b_.alloc_act(3 * N * d);
      a.att = b_.alloc_act(N * d);
      a.att_saved = b_.alloc_f32(b_.attention_saved_size(batch, T, nh));
      a.res_mid = b_.alloc_res(N * d);
      a.ln2 = b_.alloc_act(N * d);
      a.rstd2 = b_.alloc_f32(N);
      a.a = b_.alloc_act(N * H);
      a.b = b_.alloc_act(N * H);
      a.g = b_.alloc_act(N * H);
      layers_.push_back(std::move(a));
    }
    final_res_ = b_.alloc_res(N * d);
    lnf_ = b_.alloc_act(N * d);
    rstdf_ = b_.alloc_f32(N);
    tmp_ = b_.alloc_act(N * d);
    dres_ = b_.alloc_res(N * d);
    if constexpr (!kResIsAct) dres_act_ = b_.alloc_act(N * d);
    dln_ = b_.alloc_act(N * d);
    dln2_ = b_.alloc_act(N * d);
    datt_ = b_.alloc_act(N * d);
    dqkv_ = b_.alloc_act(3 * N * d);
    da_ = b_.alloc_act(N * H);
    db_ = b_.alloc_act(N * H);
    dg_ = b_.alloc_act(N * H);
    logits_ = b_.alloc_act(head_chunk_ * Vp);
  }

  const ModelConfig& config() const { return c_; }
  const std::vector<ParamTensor>& layout() const { return layout_; }
  std::deque<LayerLinearsT<Backend>>& linears() { return linears_; }

  // Quantizes (or just points at) each linear weight; once per optimizer step.
  void prepare_weights(const Weight* w) {
    for (int64_t l = 0; l < c_.n_layer; ++l) {
      const ParamTensor* t = &layout_[1 + 7 * l];
      auto& lin = linears_[l];
      lin.qkv.prepare_weight(w + t[1].offset);
      lin.wo.prepare_weight(w + t[2].offset);
      lin.w1.prepare_weight(w + t[4].offset);
      lin.w2.prepare_weight(w + t[5].offset);
      lin.w3.prepare_weight(w + t[6].offset);
    }
  }

  // x: [B, T] token ids in backend memory. Leaves the final normed activations in lnf.
  void forward(const Weight* w, const int32_t* x, int64_t B, int64_t T) {
    QUEST_CHECK(B >= 1 && B <= batch_, "model: batch {} out of the planned [1, {}]", B, batch_);
    QUEST_CHECK(T >= 1 && T <= c_.seq_len, "model: sequence length {} out of [1, {}]", T, c_.seq_len);
    const int64_t N = B * T, d = c_.d_model, H = c_.hidden_dim(), nh = c_.n_head(), hd = c_.head_dim;
    const float eps = c_.norm_eps;
    b_.embedding_forward(layers_[0].res_in, x, w + layout_[0].offset, N, d);
    // RMSNorm -> QKV / w1 and SwiGLU -> w3 go through one backend call each (the CUDA backend
    // fuses the producer into the layer's input quantizer; ln1 and g may then stay unwritten:
    // only rstd, the residual and a, b are read by the backward). w2 reads ln2 after w1.
    // Each residual add x += branch is folded into the RMSNorm that reads its sum: res_mid =
    // res_in + wo(att) into ln2's call, and layer l's res_out = res_mid + w3(g) into layer
    // l + 1's ln1 call (the branch output waits in tmp_, which nothing touches in between). The
    // sums are written all the same (the backward reads res_in and res_mid). The last layer's
    // add stays before the final norm.
    for (int64_t l = 0; l < c_.n_layer; ++l) {
      const ParamTensor* t = &layout_[1 + 7 * l];  // attn_norm wqkv wo mlp_norm w1 w2 w3
      Layer& a = layers_[l];
      auto& lin = linears_[l];
      if (l == 0)
        b_.rmsnorm_linear_forward(lin.qkv, nullptr, a.ln1, a.rstd1, a.res_in, w + t[0].offset, a.qkv, N, d, eps);
      else  // res_in = the previous layer's res_mid + its MLP output (tmp_)
        b_.add_rmsnorm_linear_forward(lin.qkv, nullptr, a.res_in, layers_[l - 1].res_mid, tmp_, a.ln1, a.rstd1,
                                      w + t[0].offset, a.qkv, N, d, eps);
      b_.rope_forward(a.qkv, B, T, nh, hd, c_.rope_theta, 0);
      b_.attention_forward(a.att, a.att_saved, a.qkv, B, T, nh, hd);
      lin.wo.forward(a.att, tmp_, N);
      b_.add_rmsnorm_linear_forward(lin.w1, &lin.w2, a.res_mid, a.res_in, tmp_, a.ln2, a.rstd2, w + t[3].offset,
                                    a.a, N, d, eps);
      lin.w2.forward(a.ln2, a.b, N);
      b_.swiglu_linear_forward(lin.w3, a.g, a.a, a.b, tmp_, N, H);
    }
    b_.add(final_res_, layers_.back().res_mid, tmp_, N * d);
    b_.rmsnorm_forward(lnf_, rstdf_, final_res_, w + final_norm().offset, N, d, eps);
  }

  // lm_head + cross-entropy over row chunks; per-row losses into losses[N] (backend memory).
  // With grads != null also the backward of the head: dlm_head accumulates, dlnf is written.
  void head(const Weight* w, float* grads, const int32_t* y, int64_t N, float grad_scale, float* losses) {
    const int64_t d = c_.d_model, V = c_.vocab_size, Vp = c_.padded_vocab();
    const ParamTensor& lm = layout_.back();
    for (int64_t r = 0; r < N; r += head_chunk_) {
      const int64_t n = std::min(head_chunk_, N - r);
      b_.matmul_forward(logits_, lnf_.get() + r * d, w + lm.offset, n, d, Vp);
      b_.cross_entropy(grads ? logits_.get() : nullptr, losses + r, logits_, y + r, n, V, Vp, grad_scale);
      if (grads)
        b_.matmul_backward(dln_.get() + r * d, grads + lm.offset, logits_, lnf_.get() + r * d, w + lm.offset, n, d, Vp);
    }
  }

  // A region [offset, offset + count) of the flat gradients whose writes are all issued.
  using GradsReady = std::function<void(int64_t offset, int64_t count)>;

  // After forward() and head(..., grads): every parameter gradient accumulates into grads. With
  // grads_ready, each region is announced as soon as its last write is issued, in this order:
  // the final norm and lm_head, layers n_layer - 1 .. 0 (each its 7 tensors), the embedding (the
  // regions cover the flat gradients once; a data-parallel engine starts their reduction there).
  void backward(const Weight* w, float* grads, const int32_t* x, int64_t B, int64_t T,
                const GradsReady& grads_ready = {}) {
    const int64_t N = B * T, d = c_.d_model, H = c_.hidden_dim(), nh = c_.n_head(), hd = c_.head_dim;
    // Each rmsnorm_backward leaves dres and, in dres_act(), its Act copy that the next linear
    // layer's backward reads (the branch outputs are Act).
    b_.fill_zero(dres_, N * d);
    b_.rmsnorm_backward(dres_, dres_act(), grads + final_norm().offset, dln_, final_res_, w + final_norm().offset,
                        rstdf_, N, d);
    if (grads_ready) grads_ready(final_norm().offset, layout_.back().offset + layout_.back().numel() - final_norm().offset);
    for (int64_t l = c_.n_layer - 1; l >= 0; --l) {
      const ParamTensor* t = &layout_[1 + 7 * l];
      Layer& a = layers_[l];
      auto& lin = linears_[l];
      // res_out = res_mid + w3(g): dres flows on unchanged, and into the MLP.
      b_.swiglu_linear_backward(lin.w3, dres_act(), grads + t[6].offset, da_, db_, dg_, a.a, a.b, N, H);
      // w1 and w2 read ln2: dln = dx(w1) + dx(w2) (dln2 is scratch). A backend may leave the input
      // gradient's mask pass to the RMSNorm backward that reads dln (`owed`).
      auto owed = b_.linear_pair_backward_to_norm(lin.w1, da_, grads + t[4].offset, lin.w2, db_, grads + t[5].offset,
                                                  dln_, dln2_, N, d);
      b_.rmsnorm_backward(dres_, dres_act(), grads + t[3].offset, dln_, a.res_mid, w + t[3].offset, a.rstd2, N, d,
                          owed);
      // res_mid = res_in + wo(att)
      lin.wo.backward(dres_act(), datt_, grads + t[2].offset, N);
      b_.attention_backward(dqkv_, datt_, a.att, a.qkv, a.att_saved, B, T, nh, hd);
      b_.rope_backward(dqkv_, B, T, nh, hd, c_.rope_theta, 0);
      owed = b_.linear_backward_to_norm(lin.qkv, dqkv_, dln_, grads + t[1].offset, N);
      b_.rmsnorm_backward(dres_, dres_act(), grads + t[0].offset, dln_, a.res_in, w + t[0].offset, a.rstd1, N, d,
                          owed);
      if (grads_ready) grads_ready(t[0].offset, t[6].offset + t[6].numel() - t[0].offset);
    }
    b_.embedding_backward(grads + layout_[0].offset, dres_, x, N, d);
    if (grads_ready) grads_ready(layout_[0].offset, layout_[0].numel());
  }

  // The logits [padded vocab] of row `row` of the last forward() (for generation).
  const Act* row_logits(const Weight* w, int64_t row) {
    const int64_t d = c_.d_model;
    b_.matmul_forward(logits_, lnf_.get() + row * d, w + layout_.back().offset, 1, d, c_.padded_vocab());
    return logits_.get();
  }

 private:
  using ActBuf = typename Backend::template Buffer<Act>;
  using ResBuf = typename Backend::template Buffer<Res>;
  using F32Buf = typename Backend::template Buffer<float>;
  static constexpr bool kResIsAct = std::is_same_v<Res, Act>;
  struct Layer {
    ResBuf res_in, res_mid;
    ActBuf ln1, qkv, att, ln2, a, b, g;
    F32Buf rstd1, att_saved, rstd2;
  };
  // The residual gradient as an Act (the gradient of a branch output): dres itself when the
  // types agree, else the copy rmsnorm_backward writes.
  Act* dres_act() {
    if constexpr (kResIsAct)
      return dres_.get();
    else
      return dres_act_.get();
  }
  const ParamTensor& final_norm() const { return layout_[layout_.size() - 2]; }

  Backend& b_;
  ModelConfig c_;
  int64_t batch_;
  std::vector<ParamTensor> layout_;
  std::deque<LayerLinearsT<Backend>> linears_;  // stable addresses; ops need not move
  std::vector<Layer> layers_;
  ResBuf final_res_, dres_;
  ActBuf dres_act_, lnf_, tmp_, dln_, dln2_, datt_, dqkv_, da_, db_, dg_, logits_;
  F32Buf rstdf_;
  int64_t head_chunk_ = 1;
};

}  // namespace quest
