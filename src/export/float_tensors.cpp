#include "export/float_tensors.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"

namespace quest {

namespace {
std::vector<int64_t> shape_of(int64_t rows, int64_t cols, bool vector) {
  return vector ? std::vector<int64_t>{rows * cols} : std::vector<int64_t>{rows, cols};
}

float int8_scale(const float* row, int64_t n) {
  float m = 0.0f;
  for (int64_t i = 0; i < n; ++i) m = std::max(m, std::fabs(row[i]));
  return m / 127.0f;
}
int8_t int8_code(float x, float scale) {
  return scale > 0.0f ? int8_t(std::clamp(std::nearbyint(x / scale), -127.0f, 127.0f)) : int8_t(0);
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

const TensorInfo& expect(const SafetensorsFile& f, const std::string& name, const std::vector<int64_t>& shape,
                         const std::string& what) {
  const TensorInfo* t = f.find(name);
  QUEST_CHECK(t != nullptr, "{}: tensor '{}' is missing", what, name);
  QUEST_CHECK(t->shape == shape, "{}: tensor '{}' has shape {}, the header's model needs {}", what,
              name, shape_str(t->shape), shape_str(shape));
  return *t;
}
}  // namespace

FloatFormat parse_float_format(std::string_view name) {
  if (name == "f32") return FloatFormat::F32;
  if (name == "bf16") return FloatFormat::Bf16;
  if (name == "int8") return FloatFormat::Int8;
  fail("float format must be f32, bf16 or int8, got '{}'", name);
}

std::string_view to_string(FloatFormat f) {
  switch (f) {
    case FloatFormat::F32: return "f32";
    case FloatFormat::Bf16: return "bf16";
    case FloatFormat::Int8: return "int8";
  }
  return "?";
}

void add_float_tensor(SafetensorsWriter& w, const std::string& name, const float* v, int64_t rows,
                      int64_t cols, bool vector, FloatFormat f) {
  const int64_t n = rows * cols;
  if (f == FloatFormat::Int8 && vector) f = FloatFormat::Bf16;
  switch (f) {
    case FloatFormat::F32: w.add(name, Dtype::F32, shape_of(rows, cols, vector), v, sizeof(float) * n); break;
    case FloatFormat::Bf16: {
      std::vector<uint16_t> b(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) b[i] = float_to_bf16(v[i]);
      w.add(name, Dtype::BF16, shape_of(rows, cols, vector), b.data(), 2 * size_t(n));
      break;
    }
    case FloatFormat::Int8: {
      std::vector<int8_t> q(static_cast<size_t>(n));
      std::vector<float> scale(static_cast<size_t>(rows));
      for (int64_t r = 0; r < rows; ++r) {
        scale[r] = int8_scale(v + r * cols, cols);
        for (int64_t i = 0; i < cols; ++i) q[r * cols + i] = int8_code(v[r * cols + i], scale[r]);
      }
      w.add(name, Dtype::I8, {rows, cols}, q.data(), size_t(n));
      w.add_f32(name + ".scale", {rows}, scale);
      break;
    }
  }
}

void round_like_format(float* v, int64_t rows, int64_t cols, bool vector, FloatFormat f) {
  if (f == FloatFormat::Int8 && vector) f = FloatFormat::Bf16;
  if (f == FloatFormat::Bf16)
    for (int64_t i = 0; i < rows * cols; ++i) v[i] = round_to_bf16(v[i]);
  if (f == FloatFormat::Int8)
    for (int64_t r = 0; r < rows; ++r) {
      const float s = int8_scale(v + r * cols, cols);
      for (int64_t i = 0; i < cols; ++i) v[r * cols + i] = float(int8_code(v[r * cols + i], s)) * s;
    }
}

void read_float_tensor(const SafetensorsFile& file, const std::string& name, int64_t rows,
                       int64_t cols, bool vector, float* out, const std::string& what) {
  const TensorInfo& t = expect(file, name, shape_of(rows, cols, vector), what);
  const auto bytes = file.data(t);
  const int64_t n = rows * cols;
  switch (t.dtype) {
    case Dtype::F32: std::memcpy(out, bytes.data(), bytes.size()); break;
    case Dtype::BF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t b;
        std::memcpy(&b, bytes.data() + 2 * i, 2);
        out[i] = bf16_to_float(b);
      }
      break;
    case Dtype::I8: {
      QUEST_CHECK(!vector, "{}: vector tensor '{}' cannot be I8", what, name);
      const TensorInfo& s = expect(file, name + ".scale", {rows}, what);
      QUEST_CHECK(s.dtype == Dtype::F32, "{}: tensor '{}.scale' must be F32, is {}", what, name, dtype_name(s.dtype));
      std::vector<float> scale(static_cast<size_t>(rows));
      std::memcpy(scale.data(), file.data(s).data(), sizeof(float) * size_t(rows));
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t i = 0; i < cols; ++i)
          out[r * cols + i] = float(int8_t(bytes[r * cols + i])) * scale[r];
      break;
    }
    default:
      fail("{}: tensor '{}' has dtype {}; expected F32, BF16 or I8", what, name, dtype_name(t.dtype));
  }
}

std::vector<std::string> float_tensor_names(const std::string& name, bool vector, FloatFormat f) {
  if (f == FloatFormat::Int8 && !vector) return {name, name + ".scale"};
  return {name};
}

}  // namespace quest
