#pragma once
// The shape of a Llama-type model (QUEST_SPEC.md section 5): the paper's size presets or any
// custom shape, and the layout of its parameters in one flat fp32 buffer.
#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

namespace quest {

struct ModelConfig {
  std::string preset = "custom";
  int64_t n_layer = 6;
  int64_t d_model = 640;
  int64_t head_dim = 128;  // n_head = d_model / head_dim
  int64_t hidden = 0;      // SwiGLU width; 0 = 256 * ceil(int(8d/3) / 256)
  int64_t vocab_size = 50257;  // real tokens
  int64_t seq_len = 512;
  float rope_theta = 10000.0f;
  float norm_eps = 1e-5f;
  float init_std = 0.02f;

  int64_t n_head() const { return d_model / head_dim; }
  int64_t hidden_dim() const;
  int64_t padded_vocab() const { return (vocab_size + 127) / 128 * 128; }
  // Parameters outside the embedding and lm_head, the paper's size measure.
  int64_t non_embedding_params() const;
  void validate() const;  // throws quest::Error naming the bad value
};

// The paper's presets ("30M", "50M", "100M", "200M", "430M", "800M", "1.6B") and "tiny" (a small
// model for first runs on a CPU). Throws quest::Error for an unknown name, listing the known ones.
ModelConfig model_preset(const std::string& name);
std::vector<std::string> model_preset_names();
// The paper's peak learning rate for a preset (0 when the preset has none).
double preset_learning_rate(const std::string& name);

void to_json(nlohmann::json& j, const ModelConfig& c);
void from_json(const nlohmann::json& j, ModelConfig& c);

// Where each parameter tensor lives in the flat buffer.
enum class ParamKind { Embedding, Norm, Linear, LmHead };
struct ParamTensor {
  std::string name;
  ParamKind kind;
  int64_t offset, rows, cols;  // a [rows, cols] matrix (norms: rows = 1)
  int64_t numel() const { return rows * cols; }
  bool weight_decay() const { return kind == ParamKind::Linear; }  // spec section 6
};
std::vector<ParamTensor> parameter_layout(const ModelConfig& c);

}  // namespace quest
