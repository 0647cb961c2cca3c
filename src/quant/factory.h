#pragma once
// Builds the quantizer a QuantSpec names, for one role of one layer.
#include <cstdint>
#include <memory>

#include "quant/quant_spec.h"
#include "quant/quantizer.h"

namespace quest {

// Validates the spec for the role and, when cols >= 0, for rows of that length (Hadamard needs
// cols % 128 == 0, sparse 4:8 cols % 8 == 0); throws quest::Error naming the problem. Hadamard
// specs give a HadamardQuantizer (the full form) whose hadamard_inner() is the domain quantizer.
// "none" gives an IdentityQuantizer.
std::unique_ptr<TensorQuantizer> make_quantizer(const QuantSpec& spec, QuantRole role,
                                                int64_t cols = -1);

}  // namespace quest
