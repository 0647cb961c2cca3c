#include "cli/quant_options.h"

namespace quest::cli {

bool QuantOptions::given() const {
  return !args.quant.empty() || !args.w_quant.empty() || !args.a_quant.empty() || bits || w_bits ||
         a_bits || args.weight_only || !args.form.empty();
}

QuantConfig QuantOptions::config() const {
  if (!given()) return QuantConfig::none();
  QuantArgs a = args;
  if (bits) a.bits = bits;
  if (w_bits) a.w_bits = w_bits;
  if (a_bits) a.a_bits = a_bits;
  return QuantConfig::from_args(a);
}

void add_quant_options(CLI::App* cmd, QuantOptions& o) {
  auto* q = cmd->add_option_group("Quantization", "QUEST_SPEC.md sections 1-4");
  q->add_option("--quant", o.args.quant,
                "Quantizer of weights and inputs: quest (Hadamard + trust), ste, clip, trust, lsq, "
                "pact, fp4, sparse48, hadamard-<name>, none/bf16");
  q->add_option("--bits", o.bits, "Bits of both weights and inputs")->check(CLI::Range(1, 8));
  q->add_option("--w-bits", o.w_bits, "Bits of the weights (overrides --bits)")->check(CLI::Range(1, 8));
  q->add_option("--a-bits", o.a_bits, "Bits of the inputs (overrides --bits)")->check(CLI::Range(1, 8));
  q->add_flag("--weight-only", o.args.weight_only, "Quantize the weights only");
  q->add_option("--w-quant", o.args.w_quant,
                "Full spelling of the weight quantizer, e.g. hadamard-trust:4 or clip:4:c=1.5");
  q->add_option("--a-quant", o.args.a_quant, "Full spelling of the input quantizer");
  q->add_option("--quant-form", o.args.form,
                "Hadamard layers: half (multiply in the transform domain) or full")
      ->check(CLI::IsMember({"half", "full"}));
}

}  // namespace quest::cli
