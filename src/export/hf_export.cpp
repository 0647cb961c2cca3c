#include "export/hf_export.h"

#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file_io.h"
#include "core/rng.h"
#include "export/safetensors.h"
#include "quant/hadamard.h"

namespace quest {

std::vector<float> effective_parameters(Model& model) {
  std::vector<float> p(model.params().begin(), model.params().end());
  for (auto& [name, op] : model.named_linears()) {
    if (!op->weight_quantizer()) continue;  // the parameter itself
    const ParamTensor& t = model.tensor(name);
    float* w = p.data() + t.offset;
    std::memcpy(w, op->product_weight(), sizeof(float) * size_t(t.numel()));
    if (op->half_form()) hadamard_transform_rows(w, t.rows, t.cols);
  }
  return p;
}

namespace {

nlohmann::json hf_config(const ModelConfig& c, const std::string& dtype, int32_t eot) {
  nlohmann::json j = {
      {"architectures", {"LlamaForCausalLM"}},
      {"model_type", "llama"},
      {"hidden_size", c.d_model},
      {"intermediate_size", c.hidden_dim()},
      {"num_hidden_layers", c.n_layer},
      {"num_attention_heads", c.n_head()},
      {"num_key_value_heads", c.n_head()},
      {"head_dim", c.head_dim},
      {"hidden_act", "silu"},
      {"max_position_embeddings", c.seq_len},
      {"rms_norm_eps", c.norm_eps},
      {"rope_theta", c.rope_theta},
      {"rope_scaling", nullptr},
      {"vocab_size", c.padded_vocab()},
      {"tie_word_embeddings", false},
      {"attention_bias", false},
      {"attention_dropout", 0.0},
      {"mlp_bias", false},
      {"pretraining_tp", 1},
      {"initializer_range", c.init_std},
      {"use_cache", true},
      {"torch_dtype", dtype},
  };
  if (eot >= 0) j["bos_token_id"] = j["eos_token_id"] = eot;
  return j;
}

// Logits [T, vocab] of every position of tokens, one full forward per prefix.
std::vector<float> all_logits(Model& model, const std::vector<int32_t>& tokens) {
  const int64_t V = model.config().vocab_size, T = int64_t(tokens.size());
  std::vector<float> out(static_cast<size_t>(T * V));
  for (int64_t t = 0; t < T; ++t) model.last_logits(tokens.data(), t + 1, out.data() + t * V);
  return out;
}

}  // namespace

void export_hf(LoadedModel& m, const std::string& dir, const HfExportOptions& options) {
  QUEST_CHECK(options.floats != FloatFormat::Int8, "the Hugging Face export is bf16 or f32, not int8");
  Model& model = *m.model;
  const ModelConfig& c = model.config();
  const int64_t d = c.d_model, hd = c.head_dim, nh = c.n_head();
  std::vector<float> p = effective_parameters(model);
  // What a reader of the file gets back, in quest's layout (for the reference logits).
  for (const ParamTensor& t : model.layout())
    round_like_format(p.data() + t.offset, t.rows, t.cols, t.kind == ParamKind::Norm, options.floats);

  SafetensorsWriter w;
  auto add = [&](const std::string& name, const float* v, int64_t rows, int64_t cols, bool vector) {
    add_float_tensor(w, name, v, rows, cols, vector, options.floats);
  };
  auto at = [&](const std::string& name) { return p.data() + model.tensor(name).offset; };
  add("model.embed_tokens.weight", at("embedding"), c.padded_vocab(), d, false);
  std::vector<float> rows(static_cast<size_t>(d * d));
  for (int64_t l = 0; l < c.n_layer; ++l) {
    const std::string q = "layers." + std::to_string(l) + ".", h = "model.layers." + std::to_string(l) + ".";
    add(h + "input_layernorm.weight", at(q + "attn_norm"), 1, d, true);
    const float* qkv = at(q + "wqkv");
    for (int part = 0; part < 2; ++part) {  // q, k: rotate-half row order within each head
      for (int64_t head = 0; head < nh; ++head)
        for (int64_t j = 0; j < hd; ++j)
          std::memcpy(rows.data() + (head * hd + j) * d, qkv + (part * d + head * hd + hf_rope_row(j, hd)) * d,
                      sizeof(float) * d);
      add(h + (part == 0 ? "self_attn.q_proj.weight" : "self_attn.k_proj.weight"), rows.data(), d, d, false);
    }
    add(h + "self_attn.v_proj.weight", qkv + 2 * d * d, d, d, false);
    add(h + "self_attn.o_proj.weight", at(q + "wo"), d, d, false);
    add(h + "post_attention_layernorm.weight", at(q + "mlp_norm"), 1, d, true);
    add(h + "mlp.gate_proj.weight", at(q + "w1"), c.hidden_dim(), d, false);
    add(h + "mlp.up_proj.weight", at(q + "w2"), c.hidden_dim(), d, false);
    add(h + "mlp.down_proj.weight", at(q + "w3"), d, c.hidden_dim(), false);
  }
  add("model.norm.weight", at("final_norm"), 1, d, true);
  add("lm_head.weight", at("lm_head"), c.padded_vocab(), d, false);
  w.set_metadata("format", "pt");  // transformers refuses safetensors files without it
  w.set_metadata("quest_model", nlohmann::json(c).dump());
  w.set_metadata("quest_quant", nlohmann::json(m.quant).dump());
  w.set_metadata("quest_tokenizer", m.tokenizer);

  std::filesystem::create_directories(dir);
  w.write(dir + "/model.safetensors");
  const std::string dtype = options.floats == FloatFormat::F32 ? "float32" : "bfloat16";
  const int32_t eot = m.tokenizer == "gpt2" ? 50256 : -1;
  AtomicFile config(dir + "/config.json");
  config.write(hf_config(c, dtype, eot).dump(2) + "\n");
  config.commit();

  if (options.reference_tokens <= 0) return;
  const int64_t T = std::min<int64_t>(options.reference_tokens, c.seq_len);
  std::vector<int32_t> tokens(static_cast<size_t>(T));
  Rng rng(options.seed);
  for (auto& t : tokens) t = int32_t(rng.below(uint64_t(c.vocab_size)));
  const std::vector<float> quantized = all_logits(model, tokens);
  Model plain(c, 1);
  std::copy(p.begin(), p.end(), plain.params().begin());
  plain.prepare_weights();
  const std::vector<float> logits = all_logits(plain, tokens);
  SafetensorsWriter ref;
  std::vector<int64_t> ids(tokens.begin(), tokens.end());
  ref.add("input_ids", Dtype::I64, {1, T}, ids.data(), sizeof(int64_t) * ids.size());
  ref.add_f32("logits", {T, c.vocab_size}, logits);
  ref.add_f32("logits_quantized", {T, c.vocab_size}, quantized);
  ref.set_metadata("format", "pt");
  ref.write(dir + "/quest_reference.safetensors");
}

}  // namespace quest
