#pragma once
// A quantized weight as codes (QUEST_SPEC.md section 8; docs/EXPORT.md): one b-bit code per
// entry, bit-packed per row (bitpack.h), and one fp32 scale per output row, in the quantizer's own
// domain (the Hadamard domain for hadamard-* quantizers). Decoding gives back the quantizer's
// output bit for bit, which is what makes an exported model's forward identical to the trained one.
//
// Code kinds, by weight quantizer:
// - grid (ste, clip, trust = QuEST with hadamard-, pact): u in [0, 2^b) is the index of the odd
//   integer c = 2u - (2^b - 1); value c * scale / 2, computed as the quantizer does:
//   q * scale - scale / 2 with q = u + 1 - 2^(b-1). scale = the row's grid step
//   (2 ALPHA[b] rms / (2^b - 1) for the grid family, 2 alpha / (2^b - 1) for PACT).
// - lsq: the same odd code, value computed as (q + 1/2) * scale with q = u - 2^(b-1); scale = the
//   learned step s (the same for every row).
// - fp4 (e2m1): 4-bit code = sign << 3 | level index; value +-LEVELS[index] * scale, LEVELS =
//   {0, .5, 1, 1.5, 2, 3, 4, 6}; scale = 0.48707976 * row rms.
// - sparse48 (4:8 pairs): per group of 8 entries a 4-bit mask of the 2 kept pairs ("pairs"
//   tensor, bit p = pair p kept, packed like codes), and grid codes of the 4 kept entries only, in
//   order; pruned entries are 0.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "quant/quant_spec.h"

namespace quest {

enum class CodeKind { Grid, Lsq, Fp4, Sparse48 };

// The code kind of a weight quantizer; nullopt for none (an unquantized weight).
std::optional<CodeKind> code_kind(const QuantSpec& spec);
std::string_view code_kind_name(CodeKind kind);  // "grid", "lsq", "fp4", "sparse48"

struct PackedWeight {
  int64_t rows = 0, cols = 0;
  int bits = 0;                 // bits per code
  std::vector<uint8_t> codes;   // [rows, code_row_bytes]
  std::vector<float> scales;    // [rows]
  std::vector<uint8_t> pairs;   // sparse48 only: [rows, pair_row_bytes]
};

int64_t codes_per_row(CodeKind kind, int64_t cols);  // cols; cols / 2 for sparse48
int64_t code_row_bytes(CodeKind kind, int bits, int64_t cols);
int64_t pair_row_bytes(int64_t cols);  // sparse48: cols / 8 nibbles

// The per-row scales of `spec` for the rows w[rows, cols], given in the quantizer's domain (after
// the Hadamard transform for hadamard-* specs), as the quantizer computes them. `learned` is the
// quantizer's learned value (LSQ step, PACT alpha); ignored by the others.
std::vector<float> weight_scales(const QuantSpec& spec, const float* w, int64_t rows, int64_t cols,
                                 float learned);

// Codes of the quantizer's output xq[rows, cols] (its own domain) under those scales. Throws
// quest::Error, naming `what`, when a value is not exactly what its code decodes to.
PackedWeight encode_weight(const QuantSpec& spec, const float* xq, std::vector<float> scales,
                           int64_t rows, int64_t cols, const std::string& what);
// xq[rows, cols] back from the codes, bit for bit.
void decode_weight(const QuantSpec& spec, const PackedWeight& p, float* xq);

}  // namespace quest
