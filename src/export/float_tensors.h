#pragma once
// The tensors of an export that are not quantized-layer codes (embedding, lm_head, norms, and the
// weights of layers without a weight quantizer), in one of three storage formats:
// - f32: exact;
// - bf16: round to nearest even (the default: what a bf16 deployment runs);
// - int8: matrices as int8 with one fp32 scale per row ("NAME" I8 + "NAME.scale" F32, value
//   q * scale, scale = max|row| / 127, q = round_half_even(x / scale)); vectors (norms) as bf16.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "export/safetensors.h"

namespace quest {

enum class FloatFormat { F32, Bf16, Int8 };

FloatFormat parse_float_format(std::string_view name);  // "f32" | "bf16" | "int8"
std::string_view to_string(FloatFormat f);

// Adds `name` ([rows, cols], or [cols] when vector) in format f.
void add_float_tensor(SafetensorsWriter& w, const std::string& name, const float* v, int64_t rows,
                      int64_t cols, bool vector, FloatFormat f);
// v[rows, cols] in place: the values a reader of format f gets back.
void round_like_format(float* v, int64_t rows, int64_t cols, bool vector, FloatFormat f);
// Reads `name` into out[rows, cols] whatever format it was written in (F32, BF16, I8 + scale);
// throws quest::Error naming `what` on a missing tensor or a wrong dtype or shape.
void read_float_tensor(const SafetensorsFile& file, const std::string& name, int64_t rows,
                       int64_t cols, bool vector, float* out, const std::string& what);
// The tensor names a float tensor `name` takes in format f (for checking that nothing is extra).
std::vector<std::string> float_tensor_names(const std::string& name, bool vector, FloatFormat f);

}  // namespace quest
