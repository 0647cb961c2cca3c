// Bit packing of b-bit codes (QUEST_SPEC.md section 8): the documented byte layout and the round
// trip at every width.
#include <gtest/gtest.h>

#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "export/bitpack.h"

namespace quest {
namespace {

TEST(Bitpack, RoundTripAtEveryWidth) {
  Rng rng(7);
  for (int bits = 1; bits <= 8; ++bits) {
    for (int64_t n : {1, 7, 8, 9, 128, 1001}) {
      std::vector<uint8_t> codes(static_cast<size_t>(n)), back(static_cast<size_t>(n));
      for (auto& c : codes) c = uint8_t(rng.below(uint64_t(1) << bits));
      std::vector<uint8_t> packed(static_cast<size_t>(packed_bytes(n, bits)));
      pack_codes(codes.data(), n, bits, packed.data());
      unpack_codes(packed.data(), n, bits, back.data());
      EXPECT_EQ(back, codes) << bits << " bits, " << n << " codes";
      EXPECT_EQ(int64_t(packed.size()), (n * bits + 7) / 8);
    }
  }
}

TEST(Bitpack, DocumentedLayout) {
  // 4 bits: two codes a byte, low nibble first.
  const uint8_t four[] = {0x1, 0xA, 0xF, 0x0, 0x7};
  uint8_t out4[3];
  pack_codes(four, 5, 4, out4);
  EXPECT_EQ(out4[0], 0xA1);
  EXPECT_EQ(out4[1], 0x0F);
  EXPECT_EQ(out4[2], 0x07);  // the unused high bits of the last byte are 0
  // 1 bit: 8 codes a byte, code i at bit i.
  const uint8_t one[] = {1, 0, 0, 1, 1, 1, 0, 1, 1};
  uint8_t out1[2];
  pack_codes(one, 9, 1, out1);
  EXPECT_EQ(out1[0], 0xB9);
  EXPECT_EQ(out1[1], 0x01);
  // 2 bits: 4 codes a byte, low bits first.
  const uint8_t two[] = {3, 0, 1, 2};
  uint8_t out2[1];
  pack_codes(two, 4, 2, out2);
  EXPECT_EQ(out2[0], 0x93);  // 10 01 00 11
  // 3 bits, dense: codes 5, 3, 7 -> stream 101 011 111 (LSB first) = bits 0..8.
  const uint8_t three[] = {5, 3, 7};
  uint8_t out3[2];
  pack_codes(three, 3, 3, out3);
  EXPECT_EQ(out3[0], uint8_t(5 | (3 << 3) | ((7 & 3) << 6)));
  EXPECT_EQ(out3[1], 7 >> 2);
}

TEST(Bitpack, RejectsCodesThatDoNotFit) {
  const uint8_t codes[] = {4};
  uint8_t out[1];
  EXPECT_THROW(pack_codes(codes, 1, 2, out), Error);
  EXPECT_THROW(pack_codes(codes, 1, 0, out), Error);
  EXPECT_THROW(pack_codes(codes, 1, 9, out), Error);
}

}  // namespace
}  // namespace quest
