#include "export/weight_codes.h"

#include <atomic>
#include <bit>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "export/bitpack.h"
#include "quant/alpha.h"
#include "quant/grid.h"

namespace quest {

namespace {

bool same_bits(float a, float b) { return std::bit_cast<uint32_t>(a) == std::bit_cast<uint32_t>(b); }

// The grid's value of integer level q, exactly as grid::quantize() computes it.
inline float grid_value(float q, float step) { return q * step - 0.5f * step; }
// LSQ's value of level q, exactly as LsqQuantizer computes it.
inline float lsq_value(float q, float s) { return (q + 0.5f) * s; }
inline float fp4_value(unsigned code, float unit) {
  const float v = kFp4Levels[code & 7] * unit;
  return (code & 8) ? -v : v;
}

// Runs f(r) for every row in parallel; the first failing row's message is thrown afterwards.
template <class F>
void for_rows(int64_t rows, const std::string& what, F&& f) {
  std::atomic<int64_t> bad{-1};
  std::string message;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    if (bad.load() >= 0) continue;
    std::string m = f(r);
    if (!m.empty()) {
      int64_t expected = -1;
      if (bad.compare_exchange_strong(expected, r)) message = std::move(m);
    }
  }
  QUEST_CHECK(bad.load() < 0, "{}: row {}: {}", what, bad.load(), message);
}

}  // namespace

std::optional<CodeKind> code_kind(const QuantSpec& spec) {
  switch (spec.kind) {
    case QuantKind::None: return std::nullopt;
    case QuantKind::Ste:
    case QuantKind::Clip:
    case QuantKind::Trust:
    case QuantKind::Pact: return CodeKind::Grid;
    case QuantKind::Lsq: return CodeKind::Lsq;
    case QuantKind::Fp4: return CodeKind::Fp4;
    case QuantKind::Sparse48: return CodeKind::Sparse48;
  }
  return std::nullopt;
}

std::string_view code_kind_name(CodeKind kind) {
  switch (kind) {
    case CodeKind::Grid: return "grid";
    case CodeKind::Lsq: return "lsq";
    case CodeKind::Fp4: return "fp4";
    case CodeKind::Sparse48: return "sparse48";
  }
  return "?";
}

int64_t codes_per_row(CodeKind kind, int64_t cols) { return kind == CodeKind::Sparse48 ? cols / 2 : cols; }
int64_t code_row_bytes(CodeKind kind, int bits, int64_t cols) {
  return packed_bytes(codes_per_row(kind, cols), bits);
}
int64_t pair_row_bytes(int64_t cols) { return packed_bytes(cols / 8, 4); }

std::vector<float> weight_scales(const QuantSpec& spec, const float* w, int64_t rows, int64_t cols,
                                 float learned) {
  std::vector<float> s(size_t(rows), 0.0f);
  switch (spec.kind) {
    case QuantKind::Lsq: std::fill(s.begin(), s.end(), learned); break;
    case QuantKind::Pact: std::fill(s.begin(), s.end(), grid::make(spec.bits, learned).step); break;
    case QuantKind::Fp4:
#pragma omp parallel for schedule(static)
      for (int64_t r = 0; r < rows; ++r) s[r] = float(kFp4Unit * grid::row_rms(w + r * cols, cols));
      break;
    default:  // the grid family and sparse48: the step of the row's own grid
#pragma omp parallel for schedule(static)
      for (int64_t r = 0; r < rows; ++r)
        s[r] = grid::from_rms(spec.bits, grid::row_rms(w + r * cols, cols)).step;
  }
  return s;
}

PackedWeight encode_weight(const QuantSpec& spec, const float* xq, std::vector<float> scales,
                           int64_t rows, int64_t cols, const std::string& what) {
  const auto kind = code_kind(spec);
  QUEST_CHECK(kind.has_value(), "{}: an unquantized weight has no codes", what);
  QUEST_CHECK(int64_t(scales.size()) == rows, "{}: {} scales for {} rows", what, scales.size(), rows);
  QUEST_CHECK(*kind != CodeKind::Sparse48 || cols % 8 == 0, "{}: 4:8 codes need cols % 8 == 0", what);
  PackedWeight p;
  p.rows = rows, p.cols = cols, p.bits = spec.bits;
  const int64_t per_row = codes_per_row(*kind, cols), row_bytes = code_row_bytes(*kind, p.bits, cols);
  p.codes.assign(size_t(rows * row_bytes), 0);
  if (*kind == CodeKind::Sparse48) p.pairs.assign(size_t(rows * pair_row_bytes(cols)), 0);
  const int b = spec.bits;
  const float grid_qmin = 1.0f - float(1 << (b - 1)), lsq_qmin = -float(1 << (b - 1));
  const float umax = float((1 << b) - 1);

  for_rows(rows, what, [&](int64_t r) -> std::string {
    const float* x = xq + r * cols;
    const float s = scales[r];
    std::vector<uint8_t> u(static_cast<size_t>(per_row)), masks;
    // One code for value v (grid or lsq levels); empty string when v is exactly its level.
    auto level = [&](float v, bool lsq, uint8_t& out) -> std::string {
      const float qmin = lsq ? lsq_qmin : grid_qmin;
      const float q = std::clamp(std::nearbyint(lsq ? v / s - 0.5f : v / s + 0.5f), qmin, qmin + umax);
      if (!same_bits(lsq ? lsq_value(q, s) : grid_value(q, s), v))
        return fmt::format("value {} is not a level of the {}-bit grid of scale {}", v, b, s);
      out = uint8_t(q - qmin);
      return {};
    };
    if (*kind == CodeKind::Grid || *kind == CodeKind::Lsq) {
      for (int64_t i = 0; i < cols; ++i)
        if (auto m = level(x[i], *kind == CodeKind::Lsq, u[i]); !m.empty()) return fmt::format("col {}: {}", i, m);
    } else if (*kind == CodeKind::Fp4) {
      for (int64_t i = 0; i < cols; ++i) {
        const unsigned sign = std::signbit(x[i]) ? 8u : 0u;
        unsigned k = 0;
        while (k < 8 && !same_bits(fp4_value(sign | k, s), x[i])) ++k;
        if (k == 8) return fmt::format("col {}: value {} is not an e2m1 level of unit {}", i, x[i], s);
        u[i] = uint8_t(sign | k);
      }
    } else {  // sparse48: a pair is kept when its entries are not 0 (the grid has no zero level)
      masks.assign(size_t(cols / 8), 0);
      int64_t n = 0;
      for (int64_t g = 0; g < cols / 8; ++g) {
        int kept = 0;
        for (int pair = 0; pair < 4; ++pair) {
          const float a = x[g * 8 + 2 * pair], c = x[g * 8 + 2 * pair + 1];
          if (a == 0.0f && c == 0.0f) continue;
          if (a == 0.0f || c == 0.0f || kept == 2)
            return fmt::format("group {} is not 4:8 pair-sparse", g);
          masks[g] |= uint8_t(1u << pair);
          ++kept;
          for (float v : {a, c})
            if (auto m = level(v, false, u[n++]); !m.empty()) return fmt::format("group {}: {}", g, m);
        }
        if (kept != 2) return fmt::format("group {} keeps {} pairs, not 2", g, kept);
      }
      pack_codes(masks.data(), cols / 8, 4, p.pairs.data() + r * pair_row_bytes(cols));
    }
    pack_codes(u.data(), per_row, b, p.codes.data() + r * row_bytes);
    return {};
  });
  p.scales = std::move(scales);
  return p;
}

void decode_weight(const QuantSpec& spec, const PackedWeight& p, float* xq) {
  const auto kind = code_kind(spec);
  QUEST_CHECK(kind.has_value(), "decode_weight: an unquantized weight has no codes");
  const int b = p.bits;
  const int64_t cols = p.cols, per_row = codes_per_row(*kind, cols), row_bytes = code_row_bytes(*kind, b, cols);
  QUEST_CHECK(int64_t(p.codes.size()) == p.rows * row_bytes && int64_t(p.scales.size()) == p.rows &&
                  (*kind != CodeKind::Sparse48 || int64_t(p.pairs.size()) == p.rows * pair_row_bytes(cols)),
              "decode_weight: the packed sizes do not match [{}, {}] at {} bits", p.rows, cols, b);
  const float grid_qmin = 1.0f - float(1 << (b - 1)), lsq_qmin = -float(1 << (b - 1));
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < p.rows; ++r) {
    std::vector<uint8_t> u(static_cast<size_t>(per_row));
    unpack_codes(p.codes.data() + r * row_bytes, per_row, b, u.data());
    float* x = xq + r * cols;
    const float s = p.scales[r];
    switch (*kind) {
      case CodeKind::Grid:
        for (int64_t i = 0; i < cols; ++i) x[i] = grid_value(float(u[i]) + grid_qmin, s);
        break;
      case CodeKind::Lsq:
        for (int64_t i = 0; i < cols; ++i) x[i] = lsq_value(float(u[i]) + lsq_qmin, s);
        break;
      case CodeKind::Fp4:
        for (int64_t i = 0; i < cols; ++i) x[i] = fp4_value(u[i], s);
        break;
      case CodeKind::Sparse48: {
        std::vector<uint8_t> masks(static_cast<size_t>(cols / 8));
        unpack_codes(p.pairs.data() + r * pair_row_bytes(cols), cols / 8, 4, masks.data());
        int64_t n = 0;
        for (int64_t g = 0; g < cols / 8; ++g)
          for (int pair = 0; pair < 4; ++pair)
            for (int e = 0; e < 2; ++e) {
              const bool kept = (masks[g] >> pair) & 1u;
              // A mask naming more than 2 pairs would run past the codes: read nothing then.
              x[g * 8 + 2 * pair + e] = kept && n < per_row ? grid_value(float(u[n++]) + grid_qmin, s) : 0.0f;
            }
        break;
      }
    }
  }
}

}  // namespace quest
