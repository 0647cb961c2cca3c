#include "model/config.h"

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace quest {

namespace {
struct Preset {
  const char* name;
  int64_t n_layer, d_model, head_dim, seq_len;
  double lr;
};
// QUEST_SPEC.md section 5. "tiny" is ours: a model that trains in minutes on two CPU cores (its
// width stays a multiple of 128, so every quantizer of the family, Hadamard included, applies).
constexpr Preset kPresets[] = {
    {"tiny", 4, 128, 64, 256, 2e-3},   {"30M", 6, 640, 128, 512, 1.2e-3},
    {"50M", 7, 768, 128, 512, 1.2e-3}, {"100M", 8, 1024, 128, 512, 6e-4},
    {"200M", 10, 1280, 128, 512, 3e-4}, {"430M", 13, 1664, 128, 512, 1.5e-4},
    {"800M", 16, 2048, 128, 512, 7.5e-5}, {"1.6B", 20, 2560, 128, 512, 3.75e-5},
};
}  // namespace

int64_t ModelConfig::hidden_dim() const {
  if (hidden > 0) return hidden;
  const int64_t h = (8 * d_model) / 3;
  return 256 * ((h + 255) / 256);
}

int64_t ModelConfig::non_embedding_params() const {
  const int64_t d = d_model, h = hidden_dim();
  const int64_t per_layer = 3 * d * d + d * d + 3 * d * h + 2 * d;
  return n_layer * per_layer + d;
}

void ModelConfig::validate() const {
  QUEST_CHECK(n_layer >= 1 && n_layer <= 1024, "model: n_layer must be in [1, 1024], got {}", n_layer);
  QUEST_CHECK(head_dim >= 2 && head_dim % 2 == 0, "model: head_dim must be even and >= 2, got {}",
              head_dim);
  QUEST_CHECK(d_model >= head_dim && d_model % head_dim == 0,
              "model: d_model ({}) must be a positive multiple of head_dim ({})", d_model, head_dim);
  QUEST_CHECK(hidden >= 0, "model: hidden must be >= 0 (0 = automatic), got {}", hidden);
  QUEST_CHECK(vocab_size >= 2 && vocab_size <= (int64_t{1} << 31) - 128,
              "model: vocab_size out of range: {}", vocab_size);
  QUEST_CHECK(seq_len >= 1 && seq_len <= 1 << 20, "model: seq_len must be in [1, 1048576], got {}",
              seq_len);
  QUEST_CHECK(rope_theta > 0, "model: rope_theta must be positive");
  QUEST_CHECK(norm_eps > 0, "model: norm_eps must be positive");
  QUEST_CHECK(init_std > 0, "model: init_std must be positive");
}

ModelConfig model_preset(const std::string& name) {
  for (const auto& p : kPresets) {
    if (name == p.name) {
      ModelConfig c;
      c.preset = name;
      c.n_layer = p.n_layer;
      c.d_model = p.d_model;
      c.head_dim = p.head_dim;
      c.seq_len = p.seq_len;
      return c;
    }
  }
  std::string known;
  for (const auto& p : kPresets) known += std::string(known.empty() ? "" : ", ") + p.name;
  fail("unknown model preset '{}' (known: {})", name, known);
}

std::vector<std::string> model_preset_names() {
  std::vector<std::string> names;
  for (const auto& p : kPresets) names.emplace_back(p.name);
  return names;
}

double preset_learning_rate(const std::string& name) {
  for (const auto& p : kPresets)
    if (name == p.name) return p.lr;
  return 0.0;
}

void to_json(nlohmann::json& j, const ModelConfig& c) {
  j = nlohmann::json{{"preset", c.preset},         {"n_layer", c.n_layer},
                     {"d_model", c.d_model},       {"head_dim", c.head_dim},
                     {"hidden", c.hidden_dim()},   {"vocab_size", c.vocab_size},
                     {"seq_len", c.seq_len},       {"rope_theta", c.rope_theta},
                     {"norm_eps", c.norm_eps},     {"init_std", c.init_std}};
}

void from_json(const nlohmann::json& j, ModelConfig& c) {
  j.at("preset").get_to(c.preset);
  j.at("n_layer").get_to(c.n_layer);
  j.at("d_model").get_to(c.d_model);
  j.at("head_dim").get_to(c.head_dim);
  j.at("hidden").get_to(c.hidden);
  j.at("vocab_size").get_to(c.vocab_size);
  j.at("seq_len").get_to(c.seq_len);
  j.at("rope_theta").get_to(c.rope_theta);
  j.at("norm_eps").get_to(c.norm_eps);
  j.at("init_std").get_to(c.init_std);
}

std::vector<ParamTensor> parameter_layout(const ModelConfig& c) {
  std::vector<ParamTensor> t;
  int64_t offset = 0;
  auto add = [&](std::string name, ParamKind kind, int64_t rows, int64_t cols) {
    t.push_back({std::move(name), kind, offset, rows, cols});
    offset += rows * cols;
  };
  const int64_t d = c.d_model, h = c.hidden_dim(), v = c.padded_vocab();
  add("embedding", ParamKind::Embedding, v, d);
  for (int64_t l = 0; l < c.n_layer; ++l) {
    const std::string p = "layers." + std::to_string(l) + ".";
    add(p + "attn_norm", ParamKind::Norm, 1, d);
    add(p + "wqkv", ParamKind::Linear, 3 * d, d);
    add(p + "wo", ParamKind::Linear, d, d);
    add(p + "mlp_norm", ParamKind::Norm, 1, d);
    add(p + "w1", ParamKind::Linear, h, d);
    add(p + "w2", ParamKind::Linear, h, d);
    add(p + "w3", ParamKind::Linear, d, h);
  }
  add("final_norm", ParamKind::Norm, 1, d);
  add("lm_head", ParamKind::LmHead, v, d);
  return t;
}

}  // namespace quest
