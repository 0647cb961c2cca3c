#pragma once
// The packed QuEST export (docs/EXPORT.md): one safetensors file holding the deployable model.
// Each quantized linear layer as its codes and per-row scales (weight_codes.h); the other
// tensors in a float format (float_tensors.h); the model config, quantizer config, tokenizer and
// a CRC-32 of the tensor data in the header's __metadata__.
//
// Tensor names follow the parameter layout (model/config.h): "embedding", "layers.L.attn_norm",
// "layers.L.wqkv.codes" + "layers.L.wqkv.scale" (+ ".pairs" for 4:8) or "layers.L.wqkv" for an
// unquantized weight, learned quantizer values as "layers.L.wqkv.input.lsq_step", ...,
// "final_norm", "lm_head".
#include <cstdint>
#include <string>

#include "export/float_tensors.h"
#include "export/safetensors.h"
#include "export/weight_codes.h"
#include "train/model_io.h"

namespace quest {

inline constexpr const char* kPackedFormat = "quest-packed";
inline constexpr int kPackedFormatVersion = 1;

struct PackedExportOptions {
  FloatFormat floats = FloatFormat::Bf16;
  // The packed export the model was loaded from, if any: its codes are copied (and checked)
  // instead of being derived from the master weights, which for a loaded export are dequantized
  // values that the quantizer would not map back to the same codes.
  std::string codes_from;
};

struct PackedExportSummary {
  uint64_t file_bytes = 0;
  uint64_t code_bytes = 0;   // codes, pair masks and scales of the quantized layers
  uint64_t float_bytes = 0;  // everything else
  int64_t packed_layers = 0, float_layers = 0;
};

// Writes the model (weights prepared: its layers' quantized weights are what gets packed) to
// path, atomically. Each layer's codes are checked to decode to exactly the weight its forward
// uses; a mismatch is an error (and a bug).
PackedExportSummary export_packed(LoadedModel& m, const std::string& path,
                                  const PackedExportOptions& options = {});

// Rebuilds the model from a packed export, planned for `batch` sequences: the exported quantized
// weights are installed as each layer's product weight (LinearOp::set_product_weight), so the
// forward is the trained model's, bit for bit (up to the float format of the other tensors). The
// parameters of quantized layers hold the dequantized weight in the original domain.
// Throws quest::Error naming the problem for a file that is not a packed export, truncated or
// corrupt data (CRC-32), or a header that disagrees with the tensors.
LoadedModel load_packed(const std::string& path, int64_t batch = 1);

// One quantized layer's codes, scales (and 4:8 pair masks) from a packed export, shapes checked
// against [rows, cols] and the spec's code kind; `path` names the file in errors.
PackedWeight read_packed_weight(const SafetensorsFile& file, const std::string& name,
                                const QuantSpec& spec, int64_t rows, int64_t cols,
                                const std::string& path);

}  // namespace quest
