#include "export/bitpack.h"

#include <cstring>

#include "core/error.h"

namespace quest {

void pack_codes(const uint8_t* codes, int64_t n, int bits, uint8_t* out) {
  QUEST_CHECK(bits >= 1 && bits <= 8, "pack_codes: bits must be 1..8, got {}", bits);
  std::memset(out, 0, size_t(packed_bytes(n, bits)));
  const unsigned limit = 1u << bits;
  for (int64_t i = 0; i < n; ++i) {
    const unsigned c = codes[i];
    QUEST_CHECK(c < limit, "pack_codes: code {} at {} does not fit in {} bits", c, i, bits);
    const int64_t bit = i * bits;
    // A code spans at most two bytes (bits <= 8).
    const unsigned shifted = c << (bit % 8);
    out[bit / 8] |= uint8_t(shifted & 0xFF);
    if ((bit % 8) + bits > 8) out[bit / 8 + 1] |= uint8_t(shifted >> 8);
  }
}

void unpack_codes(const uint8_t* in, int64_t n, int bits, uint8_t* codes) {
  QUEST_CHECK(bits >= 1 && bits <= 8, "unpack_codes: bits must be 1..8, got {}", bits);
  const unsigned mask = (1u << bits) - 1;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t bit = i * bits;
    unsigned v = in[bit / 8] >> (bit % 8);
    if ((bit % 8) + bits > 8) v |= unsigned(in[bit / 8 + 1]) << (8 - bit % 8);
    codes[i] = uint8_t(v & mask);
  }
}

}  // namespace quest
