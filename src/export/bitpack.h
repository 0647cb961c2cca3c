#pragma once
// Dense bit packing of b-bit codes (QUEST_SPEC.md section 8): code i occupies bits
// [i*b, (i+1)*b) of a little-endian bit stream, where stream bit k is bit (k % 8) of byte k / 8.
// So 1-, 2- and 4-bit codes fill a byte 8, 4 and 2 at a time, low bits first (two 4-bit codes a
// byte, low nibble first), and 3-, 5-, 6- and 7-bit codes straddle bytes with no padding between
// them; only the stream's last byte may hold unused (zero) high bits.
#include <cstdint>

namespace quest {

// Bytes that n codes of `bits` bits take: ceil(n * bits / 8).
inline int64_t packed_bytes(int64_t n, int bits) { return (n * bits + 7) / 8; }

// codes[n] (each < 2^bits; higher bits are an error) -> out[packed_bytes(n, bits)].
// bits in 1..8. Throws quest::Error on a code that does not fit.
void pack_codes(const uint8_t* codes, int64_t n, int bits, uint8_t* out);
// in[packed_bytes(n, bits)] -> codes[n].
void unpack_codes(const uint8_t* in, int64_t n, int bits, uint8_t* codes);

}  // namespace quest
