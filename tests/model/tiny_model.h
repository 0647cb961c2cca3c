#pragma once
// A model small enough for finite differences: 2 layers, d 16, two heads of 8, vocab 61 (padded
// to 128), sequences of 6.
#include "model/config.h"

namespace quest::test {

inline ModelConfig tiny_config() {
  ModelConfig c;
  c.n_layer = 2;
  c.d_model = 16;
  c.head_dim = 8;
  c.hidden = 24;
  c.vocab_size = 61;
  c.seq_len = 6;
  c.init_std = 0.2f;  // larger than 0.02 so every path carries a visible gradient
  return c;
}

}  // namespace quest::test
