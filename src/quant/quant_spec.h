#pragma once
// Which quantizer each linear layer uses (QUEST_SPEC.md section 4), as configuration: a QuantSpec
// per role (weight, input) and a QuantConfig for the pair. Recorded in checkpoints (JSON) and logs
// (describe()); a checkpoint compares QuantConfigs before loading.
//
// Full spelling of one spec:  NAME[:BITS][:c=FACTOR][:t=FACTOR]
//   NAME  none | ste | clip | trust | lsq | pact | fp4 | sparse48, optionally prefixed by
//         "hadamard-" (quantize in the Hadamard domain; for ste, clip, trust, fp4, sparse48).
//         Aliases: quest = hadamard-trust; bf16, fp32 = none.
//   BITS  1..8 (required except for none; fp4 is always 4)
//   c=    clip factor: clip masks |x| <= c * scale (default 1); 1-bit trust uses a clip mask with
//         c = 1.3 by default (the paper's W1A1 recipe)
//   t=    trust half-width in rms units: mask |xq - x| <= t * rms (trust, fp4, sparse48; default
//         ALPHA[b] / (2^b - 1), half a step; fp4: half its largest gap)
//   e.g. "hadamard-trust:4", "clip:4:c=1.5", "quest:1", "hadamard-sparse48:4", "lsq:2", "none".
// Full spelling of a config:  w=SPEC,a=SPEC[,form=half|full]   (a missing role is none)
// Short spelling (the command line): --quant quest --bits 4 | --quant lsq --w-bits 2 --a-bits 2 |
//   --quant none; see QuantArgs.
#include <nlohmann/json_fwd.hpp>

#include <optional>
#include <string>
#include <string_view>

namespace quest {

enum class QuantKind { None, Ste, Clip, Trust, Lsq, Pact, Fp4, Sparse48 };
enum class QuantRole { Weight, Input };

// How a quantizer masks gradients: not at all (straight-through), where |x| <= factor * scale
// (clip), or where |xq - x| <= factor * rms (trust). LSQ and PACT have their own fixed rules.
struct MaskRule {
  enum class Type { None, Clip, Trust };
  Type type = Type::None;
  double factor = 0.0;
  bool operator==(const MaskRule&) const = default;
};

struct QuantSpec {
  QuantKind kind = QuantKind::None;
  int bits = 0;           // 1..8; 0 for none
  bool hadamard = false;  // quantize in the Hadamard domain (the "hadamard-" prefix)
  std::optional<double> clip;   // c=
  std::optional<double> trust;  // t=

  static QuantSpec none() { return {}; }
  static QuantSpec parse(std::string_view text);  // throws quest::Error on bad input
  std::string to_string() const;                  // canonical: parse(to_string()) == *this
  std::string name() const;                       // e.g. "hadamard-trust"
  std::string describe() const;                   // one line for logs
  void validate() const;                          // throws quest::Error naming the problem
  void validate_for(QuantRole role) const;        // + role rules (sparse 4:8 is weights only)
  bool is_none() const { return kind == QuantKind::None; }
  // The backward rule with defaults applied (what the quantizer will do).
  MaskRule mask_rule() const;

  // Semantic equality: kind, bits, Hadamard and the effective mask rule ("quest:1" equals
  // "quest:1:c=1.3").
  bool operator==(const QuantSpec& o) const;
};

enum class HadamardForm { Half, Full };

// The command-line options of the short spelling, as given (unset = not given).
struct QuantArgs {
  std::string quant;                    // --quant NAME (a spec NAME without bits, or quest/bf16)
  std::optional<int> bits;              // --bits: both roles
  std::optional<int> w_bits, a_bits;    // --w-bits / --a-bits: one role (override --bits)
  bool weight_only = false;             // --weight-only: inputs stay full precision
  std::string w_quant, a_quant;         // --w-quant / --a-quant: full spelling of one role
  std::string form;                     // --quant-form half|full (default half)
};

struct QuantConfig {
  QuantSpec weight, input;
  // How a layer runs Hadamard quantizers: "half" transforms x and W once and multiplies in the
  // transform domain; "full" lets each quantizer transform back. Same results up to fp32 rounding;
  // half needs each quantizer to be Hadamard-based or none (LinearOp falls back to full otherwise).
  HadamardForm form = HadamardForm::Half;

  static QuantConfig none() { return {}; }
  bool quantized() const { return !weight.is_none() || !input.is_none(); }
  bool uses_hadamard() const { return weight.hadamard || input.hadamard; }

  static QuantConfig parse(std::string_view text);      // full spelling "w=...,a=...,form=..."
  static QuantConfig from_args(const QuantArgs& args);  // short (or per-role full) spelling
  // The same from command-line text, e.g. "--quant lsq --w-bits 2 --a-bits 2" ("--opt=v" works).
  static QuantConfig from_command_line(std::string_view text);
  std::string to_string() const;  // canonical full spelling
  std::string describe() const;   // one line for logs, e.g. "W4A4: weights ...; inputs ...; ..."
  void validate() const;

  // Equal numerics (weight and input specs); the form is an execution choice and is ignored.
  bool same_quantization(const QuantConfig& o) const { return weight == o.weight && input == o.input; }
  // Empty when same_quantization(o), else what differs (for a checkpoint's refusal message).
  std::string difference(const QuantConfig& o) const;
  bool operator==(const QuantConfig& o) const { return same_quantization(o) && form == o.form; }
};

std::string to_string(HadamardForm form);
HadamardForm parse_hadamard_form(std::string_view text);

void to_json(nlohmann::json& j, const QuantSpec& spec);
void from_json(const nlohmann::json& j, QuantSpec& spec);
void to_json(nlohmann::json& j, const QuantConfig& config);
void from_json(const nlohmann::json& j, QuantConfig& config);

}  // namespace quest
