#pragma once
// A tokenizer for tests: every byte is one token (vocabulary 256, end-of-text 0).
#include "data/tokenizer.h"

namespace quest::test {

class ByteTokenizer final : public Tokenizer {
 public:
  std::vector<int32_t> encode(std::string_view text) const override {
    std::vector<int32_t> out;
    for (char c : text) out.push_back(static_cast<unsigned char>(c));
    return out;
  }
  std::string decode(std::span<const int32_t> tokens) const override {
    std::string s;
    for (int32_t t : tokens) s += char(t);
    return s;
  }
  int32_t vocab_size() const override { return 256; }
  int32_t eot_token() const override { return 0; }
  std::string name() const override { return "test-bytes"; }
};

}  // namespace quest::test
