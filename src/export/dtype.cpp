#include "export/dtype.h"

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>

namespace quest {

namespace {
struct DtypeInfo {
  Dtype type;
  std::string_view name;
  int size;
};
constexpr DtypeInfo kDtypes[] = {
    {Dtype::Bool, "BOOL", 1}, {Dtype::U8, "U8", 1},         {Dtype::I8, "I8", 1},
    {Dtype::I16, "I16", 2},   {Dtype::U16, "U16", 2},       {Dtype::F16, "F16", 2},
    {Dtype::BF16, "BF16", 2}, {Dtype::I32, "I32", 4},       {Dtype::U32, "U32", 4},
    {Dtype::F32, "F32", 4},   {Dtype::F64, "F64", 8},       {Dtype::I64, "I64", 8},
    {Dtype::U64, "U64", 8},   {Dtype::F8E4M3, "F8_E4M3", 1}, {Dtype::F8E5M2, "F8_E5M2", 1},
};

template <class T>
T load(const uint8_t* p, int64_t i) {
  T v;
  std::memcpy(&v, p + i * int64_t(sizeof(T)), sizeof(T));
  return v;
}
}  // namespace

std::string_view dtype_name(Dtype t) {
  for (const auto& d : kDtypes)
    if (d.type == t) return d.name;
  return "?";
}

std::optional<Dtype> parse_dtype(std::string_view name) {
  for (const auto& d : kDtypes)
    if (d.name == name) return d.type;
  return std::nullopt;
}

int dtype_size(Dtype t) {
  for (const auto& d : kDtypes)
    if (d.type == t) return d.size;
  return 0;
}

uint16_t float_to_bf16(float x) {
  uint32_t u = std::bit_cast<uint32_t>(x);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return uint16_t((u >> 16) | 0x0040u);  // quiet NaN
  u += 0x7FFFu + ((u >> 16) & 1u);  // round to nearest, ties to even
  return uint16_t(u >> 16);
}

float bf16_to_float(uint16_t b) { return std::bit_cast<float>(uint32_t(b) << 16); }

float f16_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h >> 15) << 31;
  const uint32_t exp = (h >> 10) & 0x1F, man = h & 0x3FF;
  if (exp == 0) {  // zero or subnormal: man * 2^-24
    const float v = std::ldexp(float(man), -24);
    return sign ? -v : v;
  }
  if (exp == 31) return std::bit_cast<float>(sign | 0x7F800000u | (man << 13));
  return std::bit_cast<float>(sign | ((exp + 112) << 23) | (man << 13));
}

double element_as_double(Dtype t, const uint8_t* p, int64_t i) {
  switch (t) {
    case Dtype::Bool: return p[i] ? 1.0 : 0.0;
    case Dtype::U8: return p[i];
    case Dtype::I8: return int8_t(p[i]);
    case Dtype::I16: return load<int16_t>(p, i);
    case Dtype::U16: return load<uint16_t>(p, i);
    case Dtype::F16: return f16_to_float(load<uint16_t>(p, i));
    case Dtype::BF16: return bf16_to_float(load<uint16_t>(p, i));
    case Dtype::I32: return load<int32_t>(p, i);
    case Dtype::U32: return load<uint32_t>(p, i);
    case Dtype::F32: return load<float>(p, i);
    case Dtype::F64: return load<double>(p, i);
    case Dtype::I64: return double(load<int64_t>(p, i));
    case Dtype::U64: return double(load<uint64_t>(p, i));
    default: return std::numeric_limits<double>::quiet_NaN();
  }
}

}  // namespace quest
