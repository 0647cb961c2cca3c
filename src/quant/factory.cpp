#include "quant/factory.h"

#include "core/error.h"
#include "quant/hadamard.h"
#include "quant/quantizers.h"

namespace quest {

std::unique_ptr<TensorQuantizer> make_quantizer(const QuantSpec& spec, QuantRole role, int64_t cols) {
  spec.validate_for(role);
  const std::string name = spec.to_string();
  if (cols >= 0) {
    QUEST_CHECK(!spec.hadamard || cols % kHadamardBlock == 0,
                "quantizer '{}': the Hadamard transform needs K (in_features) to be a multiple of "
                "{}, got {}",
                name, kHadamardBlock, cols);
    QUEST_CHECK(spec.kind != QuantKind::Sparse48 || cols % 8 == 0,
                "quantizer '{}': 4:8 sparsity needs K (in_features) to be a multiple of 8, got {}",
                name, cols);
  }
  std::unique_ptr<TensorQuantizer> q;
  switch (spec.kind) {
    case QuantKind::None: return std::make_unique<IdentityQuantizer>();
    case QuantKind::Ste:
    case QuantKind::Clip:
    case QuantKind::Trust: q = std::make_unique<GridQuantizer>(spec.bits, spec.mask_rule(), name); break;
    case QuantKind::Lsq: q = std::make_unique<LsqQuantizer>(spec.bits, name); break;
    case QuantKind::Pact: q = std::make_unique<PactQuantizer>(spec.bits, name); break;
    case QuantKind::Fp4: q = std::make_unique<Fp4Quantizer>(spec.mask_rule().factor, name); break;
    case QuantKind::Sparse48:
      q = std::make_unique<Sparse48Quantizer>(spec.bits, spec.mask_rule().factor, name);
      break;
  }
  if (spec.hadamard) q = std::make_unique<HadamardQuantizer>(std::move(q));
  return q;
}

}  // namespace quest
