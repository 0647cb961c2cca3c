#include "quant/quant_spec.h"

#include <fmt/format.h>

#include <charconv>
#include <cmath>
#include <nlohmann/json.hpp>
#include <vector>

#include "core/error.h"
#include "quant/alpha.h"

namespace quest {

namespace {

constexpr std::string_view kHadamardPrefix = "hadamard-";

struct KindName {
  QuantKind kind;
  std::string_view name;
  bool hadamard_ok;
};
constexpr KindName kKinds[] = {
    {QuantKind::None, "none", false},   {QuantKind::Ste, "ste", true},
    {QuantKind::Clip, "clip", true},    {QuantKind::Trust, "trust", true},
    {QuantKind::Lsq, "lsq", false},     {QuantKind::Pact, "pact", false},
    {QuantKind::Fp4, "fp4", true},      {QuantKind::Sparse48, "sparse48", true},
};
constexpr std::string_view kKnownNames =
    "none, ste, clip, trust, lsq, pact, fp4, sparse48 (ste, clip, trust, fp4 and sparse48 also with "
    "the prefix hadamard-), quest (= hadamard-trust), bf16 / fp32 (= none)";

std::string_view kind_name(QuantKind k) {
  for (const auto& e : kKinds)
    if (e.kind == k) return e.name;
  return "?";
}

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  size_t start = 0;
  while (true) {
    const size_t p = s.find(sep, start);
    out.push_back(s.substr(start, p == std::string_view::npos ? std::string_view::npos : p - start));
    if (p == std::string_view::npos) break;
    start = p + 1;
  }
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

std::optional<int> parse_int(std::string_view s) {
  int v = 0;
  const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || s.empty()) return std::nullopt;
  return v;
}

double parse_factor(std::string_view s, std::string_view key, std::string_view text) {
  double v = 0.0;
  const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  QUEST_CHECK(ec == std::errc() && p == s.data() + s.size() && !s.empty(),
              "quantizer '{}': {}= needs a number, got '{}'", text, key, s);
  return v;
}

// (kind, hadamard) from a NAME, aliases resolved; throws on unknown names.
std::pair<QuantKind, bool> parse_name(std::string_view name, std::string_view text) {
  if (name == "quest") return {QuantKind::Trust, true};
  if (name == "bf16" || name == "fp32") return {QuantKind::None, false};
  bool hadamard = false;
  if (name.starts_with(kHadamardPrefix)) {
    hadamard = true;
    name.remove_prefix(kHadamardPrefix.size());
  }
  for (const auto& e : kKinds) {
    if (e.name != name) continue;
    QUEST_CHECK(!hadamard || e.hadamard_ok,
                "quantizer '{}': {} has no Hadamard form (hadamard- applies to ste, clip, trust, "
                "fp4 and sparse48)",
                text, name);
    return {e.kind, hadamard};
  }
  fail("quantizer '{}': unknown name '{}'; known: {}", text, name, kKnownNames);
}

std::string fmt_factor(double v) { return fmt::format("{}", v); }  // shortest exact round trip

}  // namespace

// ---- QuantSpec ---------------------------------------------------------------------------------

QuantSpec QuantSpec::parse(std::string_view text) {
  text = trim(text);
  QUEST_CHECK(!text.empty(), "quantizer: empty specification; e.g. hadamard-trust:4 or none");
  const auto parts = split(text, ':');
  QuantSpec s;
  std::tie(s.kind, s.hadamard) = parse_name(parts[0], text);
  size_t i = 1;
  if (i < parts.size() && !parts[i].empty() && parts[i].find('=') == std::string_view::npos) {
    const auto b = parse_int(parts[i]);
    QUEST_CHECK(b.has_value(), "quantizer '{}': '{}' is not a bit width (an integer 1..8)", text,
                parts[i]);
    s.bits = *b;
    ++i;
  } else if (s.kind == QuantKind::Fp4) {
    s.bits = 4;
  } else if (s.kind != QuantKind::None) {
    fail("quantizer '{}': needs a bit width, e.g. {}:4", text, parts[0]);
  }
  for (; i < parts.size(); ++i) {
    const auto p = parts[i];
    const size_t eq = p.find('=');
    QUEST_CHECK(eq != std::string_view::npos, "quantizer '{}': expected key=value, got '{}'", text, p);
    const auto key = p.substr(0, eq), value = p.substr(eq + 1);
    if (key == "c") {
      QUEST_CHECK(!s.clip, "quantizer '{}': c= given twice", text);
      s.clip = parse_factor(value, key, text);
    } else if (key == "t") {
      QUEST_CHECK(!s.trust, "quantizer '{}': t= given twice", text);
      s.trust = parse_factor(value, key, text);
    } else {
      fail("quantizer '{}': unknown parameter '{}' (known: c= clip factor, t= trust factor)", text,
           key);
    }
  }
  s.validate();
  return s;
}

std::string QuantSpec::name() const {
  return fmt::format("{}{}", hadamard ? kHadamardPrefix : "", kind_name(kind));
}

std::string QuantSpec::to_string() const {
  std::string out = name();
  if (kind != QuantKind::None && kind != QuantKind::Fp4) out += fmt::format(":{}", bits);
  if (clip) out += ":c=" + fmt_factor(*clip);
  if (trust) out += ":t=" + fmt_factor(*trust);
  return out;
}

void QuantSpec::validate() const {
  const std::string text = to_string();
  if (kind == QuantKind::None) {
    QUEST_CHECK(bits == 0 && !hadamard && !clip && !trust,
                "quantizer '{}': none takes no bit width, Hadamard or parameters", text);
    return;
  }
  QUEST_CHECK(bits >= kMinBits && bits <= kMaxBits, "quantizer '{}': bits must be {}..{}, got {}",
              text, kMinBits, kMaxBits, bits);
  QUEST_CHECK(!hadamard || kind == QuantKind::Ste || kind == QuantKind::Clip ||
                  kind == QuantKind::Trust || kind == QuantKind::Fp4 || kind == QuantKind::Sparse48,
              "quantizer '{}': {} has no Hadamard form", text, kind_name(kind));
  QUEST_CHECK(kind != QuantKind::Lsq || bits >= 2,
              "quantizer '{}': LSQ has no 1-bit form (its largest level index qmax = 2^(b-1) - 1 is "
              "0 at 1 bit); use 2..8 bits, or quest:1 for W1A1",
              text);
  QUEST_CHECK(kind != QuantKind::Fp4 || bits == 4, "quantizer '{}': fp4 (e2m1) is 4-bit, got {} bits",
              text, bits);
  const bool one_bit_trust = kind == QuantKind::Trust && bits == 1;
  if (clip) {
    QUEST_CHECK(kind == QuantKind::Clip || one_bit_trust,
                "quantizer '{}': c= (clip factor) applies to clip and to 1-bit trust only", text);
    QUEST_CHECK(std::isfinite(*clip) && *clip > 0, "quantizer '{}': c= must be positive, got {}",
                text, *clip);
  }
  if (trust) {
    QUEST_CHECK(kind == QuantKind::Trust || kind == QuantKind::Fp4 || kind == QuantKind::Sparse48,
                "quantizer '{}': t= (trust factor) applies to trust, fp4 and sparse48 only", text);
    QUEST_CHECK(std::isfinite(*trust) && *trust > 0, "quantizer '{}': t= must be positive, got {}",
                text, *trust);
    QUEST_CHECK(!(one_bit_trust && clip),
                "quantizer '{}': 1-bit trust takes either c= (clip mask) or t= (trust mask), not both",
                text);
  }
}

void QuantSpec::validate_for(QuantRole role) const {
  validate();
  QUEST_CHECK(!(role == QuantRole::Input && kind == QuantKind::Sparse48),
              "quantizer '{}': 4:8 sparsity is for weights only, not for layer inputs", to_string());
}

MaskRule QuantSpec::mask_rule() const {
  using T = MaskRule::Type;
  switch (kind) {
    case QuantKind::Clip: return {T::Clip, clip.value_or(1.0)};
    case QuantKind::Trust:
      if (bits == 1 && !trust) return {T::Clip, clip.value_or(kOneBitClip)};
      return {T::Trust, trust.value_or(default_trust(bits))};
    case QuantKind::Fp4: return {T::Trust, trust.value_or(kFp4Unit)};  // half the gap 4 -> 6
    case QuantKind::Sparse48: return {T::Trust, trust.value_or(default_trust(bits))};
    default: return {};
  }
}

bool QuantSpec::operator==(const QuantSpec& o) const {
  return kind == o.kind && bits == o.bits && hadamard == o.hadamard && mask_rule() == o.mask_rule();
}

std::string QuantSpec::describe() const {
  if (kind == QuantKind::None) return "none (full precision)";
  const MaskRule m = mask_rule();
  std::string mask;
  switch (m.type) {
    case MaskRule::Type::None: mask = "straight-through gradient"; break;
    case MaskRule::Type::Clip: mask = fmt::format("clip mask |x| <= {:.4g} scale", m.factor); break;
    case MaskRule::Type::Trust: mask = fmt::format("trust mask |xq - x| <= {:.4g} rms", m.factor); break;
  }
  const std::string had = hadamard ? "Hadamard, " : "";
  const std::string grid = bits == 1 ? fmt::format("sign * {:.4g} rms", kAlpha[1])
                                     : fmt::format("{}-bit grid clip {:.4g} rms", bits, kAlpha[bits]);
  switch (kind) {
    case QuantKind::Trust:
      return fmt::format("{} = {}{}{}, {}", to_string(), hadamard ? "QuEST (" : "", had + grid,
                         hadamard ? ")" : "", mask);
    case QuantKind::Ste:
    case QuantKind::Clip: return fmt::format("{} = {}{}, {}", to_string(), had, grid, mask);
    case QuantKind::Lsq:
      return fmt::format("{} = LSQ {}-bit, learned per-tensor step, STE with clip", to_string(), bits);
    case QuantKind::Pact:
      return fmt::format("{} = PACT {}-bit, learned per-tensor clip, gradient where |x| < alpha",
                         to_string(), bits);
    case QuantKind::Fp4:
      return fmt::format("{} = {}fp4 e2m1 grid in units of {:.6g} rms, {}", to_string(), had,
                         kFp4Unit, mask);
    case QuantKind::Sparse48:
      return fmt::format("{} = {}4:8 pair-sparse {}, {}", to_string(), had, grid, mask);
    default: return to_string();
  }
}

// ---- QuantConfig -------------------------------------------------------------------------------

std::string to_string(HadamardForm form) { return form == HadamardForm::Half ? "half" : "full"; }

HadamardForm parse_hadamard_form(std::string_view text) {
  if (text == "half") return HadamardForm::Half;
  if (text == "full") return HadamardForm::Full;
  fail("Hadamard form must be half or full, got '{}'", text);
}

void QuantConfig::validate() const {
  weight.validate_for(QuantRole::Weight);
  input.validate_for(QuantRole::Input);
}

QuantConfig QuantConfig::parse(std::string_view text) {
  QuantConfig c;
  bool seen_w = false, seen_a = false, seen_form = false;
  for (auto item : split(trim(text), ',')) {
    item = trim(item);
    const size_t eq = item.find('=');
    QUEST_CHECK(eq != std::string_view::npos,
                "quantization '{}': expected w=SPEC, a=SPEC or form=half|full, got '{}'", text, item);
    const auto key = trim(item.substr(0, eq)), value = trim(item.substr(eq + 1));
    if (key == "w") {
      QUEST_CHECK(!seen_w, "quantization '{}': w= given twice", text);
      c.weight = QuantSpec::parse(value), seen_w = true;
    } else if (key == "a") {
      QUEST_CHECK(!seen_a, "quantization '{}': a= given twice", text);
      c.input = QuantSpec::parse(value), seen_a = true;
    } else if (key == "form") {
      QUEST_CHECK(!seen_form, "quantization '{}': form= given twice", text);
      c.form = parse_hadamard_form(value), seen_form = true;
    } else {
      fail("quantization '{}': unknown key '{}' (known: w, a, form)", text, key);
    }
  }
  c.validate();
  return c;
}

std::string QuantConfig::to_string() const {
  return fmt::format("w={},a={},form={}", weight.to_string(), input.to_string(), quest::to_string(form));
}

QuantConfig QuantConfig::from_args(const QuantArgs& a) {
  QuantConfig c;
  if (!a.form.empty()) c.form = parse_hadamard_form(a.form);
  const bool any_bits = a.bits || a.w_bits || a.a_bits;
  if (!a.w_quant.empty() || !a.a_quant.empty()) {  // per-role full spelling
    QUEST_CHECK(a.quant.empty(), "--quant cannot be combined with --w-quant / --a-quant");
    QUEST_CHECK(!any_bits, "with --w-quant / --a-quant the bits go inside the spelling, e.g. "
                           "--w-quant hadamard-trust:4");
    if (!a.w_quant.empty()) c.weight = QuantSpec::parse(a.w_quant);
    if (!a.a_quant.empty()) {
      QUEST_CHECK(!a.weight_only, "--weight-only cannot be combined with --a-quant");
      c.input = QuantSpec::parse(a.a_quant);
    }
    c.validate();
    return c;
  }
  const std::string name = a.quant.empty() ? "none" : a.quant;
  QUEST_CHECK(name.find(':') == std::string::npos,
              "--quant takes a name (e.g. quest, lsq, ste); give bits with --bits, or use --w-quant "
              "/ --a-quant for the full spelling '{}'",
              name);
  QuantSpec base;
  std::tie(base.kind, base.hadamard) = parse_name(name, "--quant " + name);
  if (base.kind == QuantKind::Fp4) base.bits = 4;
  if (base.is_none()) {
    QUEST_CHECK(!any_bits && !a.weight_only, "--quant {} takes no --bits / --weight-only", name);
    return c;
  }
  auto with_bits = [&](QuantSpec s, std::optional<int> b, std::string_view flag) {
    if (s.kind == QuantKind::Fp4) {
      QUEST_CHECK(!b || *b == 4, "--quant {}: fp4 is 4-bit, got {} {}", name, flag, *b);
      return s;
    }
    QUEST_CHECK(b.has_value(), "--quant {} needs {} (or --bits for both roles{})", name, flag,
                flag == "--a-bits" ? ", or --weight-only" : "");
    s.bits = *b;
    s.validate();
    return s;
  };
  c.weight = with_bits(base, a.w_bits ? a.w_bits : a.bits, "--w-bits");
  if (a.weight_only) {
    QUEST_CHECK(!a.a_bits, "--weight-only cannot be combined with --a-bits");
  } else {
    QuantSpec in = base;
    if (base.kind == QuantKind::Sparse48) in.kind = QuantKind::Trust;  // sparsity is weights only
    c.input = with_bits(in, a.a_bits ? a.a_bits : a.bits, "--a-bits");
  }
  c.validate();
  return c;
}

QuantConfig QuantConfig::from_command_line(std::string_view text) {
  std::vector<std::string_view> tokens;
  for (auto t : split(text, ' '))
    if (!trim(t).empty()) tokens.push_back(trim(t));
  QuantArgs a;
  for (size_t i = 0; i < tokens.size(); ++i) {
    std::string_view opt = tokens[i], value;
    bool inline_value = false;
    if (const size_t eq = opt.find('='); opt.starts_with("--") && eq != std::string_view::npos) {
      value = opt.substr(eq + 1), opt = opt.substr(0, eq), inline_value = true;
    }
    if (opt == "--weight-only") {
      QUEST_CHECK(!inline_value, "--weight-only takes no value");
      a.weight_only = true;
      continue;
    }
    if (!inline_value) {
      QUEST_CHECK(i + 1 < tokens.size(), "quantization options: {} needs a value", opt);
      value = tokens[++i];
    }
    auto bits = [&]() -> int {
      const auto b = parse_int(value);
      QUEST_CHECK(b.has_value(), "{} needs an integer, got '{}'", opt, value);
      return *b;
    };
    if (opt == "--quant") a.quant = value;
    else if (opt == "--bits") a.bits = bits();
    else if (opt == "--w-bits") a.w_bits = bits();
    else if (opt == "--a-bits") a.a_bits = bits();
    else if (opt == "--w-quant") a.w_quant = value;
    else if (opt == "--a-quant") a.a_quant = value;
    else if (opt == "--quant-form") a.form = value;
    else
      fail("quantization options: unknown option '{}' (known: --quant, --bits, --w-bits, --a-bits, "
           "--weight-only, --w-quant, --a-quant, --quant-form)",
           opt);
  }
  return from_args(a);
}

std::string QuantConfig::describe() const {
  auto tag = [](const QuantSpec& s) { return s.is_none() ? std::string("32") : fmt::format("{}", s.bits); };
  std::string out = fmt::format("W{}A{}: weights {}; inputs {}", tag(weight), tag(input),
                                weight.describe(), input.describe());
  if (uses_hadamard()) out += fmt::format("; Hadamard form {}", quest::to_string(form));
  return out;
}

std::string QuantConfig::difference(const QuantConfig& o) const {
  std::string out;
  if (!(weight == o.weight)) out += fmt::format("weights {} vs {}", weight.to_string(), o.weight.to_string());
  if (!(input == o.input))
    out += fmt::format("{}inputs {} vs {}", out.empty() ? "" : "; ", input.to_string(), o.input.to_string());
  return out;
}

// ---- JSON --------------------------------------------------------------------------------------

void to_json(nlohmann::json& j, const QuantSpec& s) {
  j = nlohmann::json{{"kind", s.name()}};
  if (!s.is_none()) j["bits"] = s.bits;
  if (s.clip) j["c"] = *s.clip;
  if (s.trust) j["t"] = *s.trust;
}

void from_json(const nlohmann::json& j, QuantSpec& s) {
  QUEST_CHECK(j.is_object() && j.contains("kind") && j["kind"].is_string(),
              "quantizer JSON: expected an object with a string 'kind', got {}", j.dump());
  for (const auto& [key, value] : j.items())
    QUEST_CHECK(key == "kind" || key == "bits" || key == "c" || key == "t",
                "quantizer JSON: unknown key '{}' in {}", key, j.dump());
  const std::string kind = j["kind"].get<std::string>();
  QuantSpec out;
  std::tie(out.kind, out.hadamard) = parse_name(kind, kind);
  QUEST_CHECK(!j.contains("bits") || j["bits"].is_number_integer(),
              "quantizer JSON: 'bits' must be an integer in {}", j.dump());
  if (j.contains("bits")) out.bits = j["bits"].get<int>();
  else if (out.kind == QuantKind::Fp4) out.bits = 4;
  for (const char* key : {"c", "t"}) {
    if (!j.contains(key)) continue;
    QUEST_CHECK(j[key].is_number(), "quantizer JSON: '{}' must be a number in {}", key, j.dump());
    (key[0] == 'c' ? out.clip : out.trust) = j[key].get<double>();
  }
  out.validate();
  s = out;
}

void to_json(nlohmann::json& j, const QuantConfig& c) {
  j = nlohmann::json{{"weight", c.weight}, {"input", c.input}, {"form", to_string(c.form)}};
}

void from_json(const nlohmann::json& j, QuantConfig& c) {
  QUEST_CHECK(j.is_object(), "quantization JSON: expected an object, got {}", j.dump());
  for (const auto& [key, value] : j.items())
    QUEST_CHECK(key == "weight" || key == "input" || key == "form",
                "quantization JSON: unknown key '{}'", key);
  QuantConfig out;
  if (j.contains("weight")) out.weight = j["weight"].get<QuantSpec>();
  if (j.contains("input")) out.input = j["input"].get<QuantSpec>();
  if (j.contains("form")) {
    QUEST_CHECK(j["form"].is_string(), "quantization JSON: 'form' must be a string");
    out.form = parse_hadamard_form(j["form"].get<std::string>());
  }
  out.validate();
  c = out;
}

}  // namespace quest
