#pragma once
// The quantization options shared by commands (train, align): the short spelling
// (--quant quest --bits 4) and the full one (--w-quant hadamard-trust:4 --a-quant ...).
#include <CLI/CLI.hpp>

#include "quant/quant_spec.h"

namespace quest::cli {

struct QuantOptions {
  QuantArgs args;
  int bits = 0, w_bits = 0, a_bits = 0;  // 0: not given
  bool given() const;
  QuantConfig config() const;  // none when no option was given
};

void add_quant_options(CLI::App* cmd, QuantOptions& o);

}  // namespace quest::cli
