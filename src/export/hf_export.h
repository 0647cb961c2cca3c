#pragma once
// A plain Hugging Face export: DIR/config.json (LlamaConfig) and DIR/model.safetensors (bf16 or
// f32) that transformers' LlamaForCausalLM loads. Each linear layer carries the weight its forward
// multiplies by, back in the original domain (for a quantized layer: the dequantized weight);
// activation quantization has no transformers equivalent and is dropped, so transformers computes
// quest's forward with full-precision layer inputs.
//
// Layout differences handled here: quest's fused wqkv is split into q/k/v_proj; quest's RoPE turns
// adjacent pairs (2i, 2i+1) of a head, transformers' turns (i, i + head_dim/2), so the q and k rows
// of each head are permuted (row j of HF = row 2j of quest for j < head_dim/2, row 2(j - head_dim/2)
// + 1 after); w1 -> gate_proj, w2 -> up_proj, w3 -> down_proj; the embedding rows stay padded
// (vocab_size in config.json is the padded count); untied lm_head.
#include <cstdint>
#include <string>
#include <vector>

#include "export/float_tensors.h"
#include "train/model_io.h"

namespace quest {

struct HfExportOptions {
  FloatFormat floats = FloatFormat::Bf16;  // bf16 or f32
  // > 0: also DIR/quest_reference.safetensors with "input_ids" [1, N] (seeded random tokens),
  // "logits" [N, vocab] (quest's forward of the exported weights with full-precision inputs: what
  // transformers must reproduce) and "logits_quantized" [N, vocab] (the model's own forward).
  int64_t reference_tokens = 0;
  uint64_t seed = 0;
};

void export_hf(LoadedModel& m, const std::string& dir, const HfExportOptions& options = {});

// The permutation of one head's rows: HF row j takes quest row hf_rope_row(j, head_dim).
inline int64_t hf_rope_row(int64_t j, int64_t head_dim) {
  return j < head_dim / 2 ? 2 * j : 2 * (j - head_dim / 2) + 1;
}

// The weight each linear layer multiplies by, in the original domain, in parameter-layout form
// (the model's parameters with every linear weight replaced by it).
std::vector<float> effective_parameters(Model& model);

}  // namespace quest
