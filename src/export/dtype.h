#pragma once
// The element types of safetensors files (names as the format spells them) and the conversions
// quest needs: fp32 <-> bf16 (round to nearest even) and fp16 -> fp32 for reading.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace quest {

enum class Dtype { Bool, U8, I8, I16, U16, F16, BF16, I32, U32, F32, F64, I64, U64, F8E4M3, F8E5M2 };

std::string_view dtype_name(Dtype t);                    // "BF16", "U8", ...
std::optional<Dtype> parse_dtype(std::string_view name);  // nullopt for names quest does not know
int dtype_size(Dtype t);                                  // bytes per element

// fp32 -> bf16 bits, round to nearest even (NaN stays a quiet NaN); bf16 bits -> fp32 (exact).
uint16_t float_to_bf16(float x);
float bf16_to_float(uint16_t b);
// The value bf16 rounding gives (float_to_bf16 then back).
inline float round_to_bf16(float x) { return bf16_to_float(float_to_bf16(x)); }
// IEEE half bits -> fp32 (exact, subnormals and infinities included).
float f16_to_float(uint16_t h);

// Element i of a tensor of type t at p, as a double (for checksums and inspection). F8 types are
// not decoded (returns NaN).
double element_as_double(Dtype t, const uint8_t* p, int64_t i);

}  // namespace quest
