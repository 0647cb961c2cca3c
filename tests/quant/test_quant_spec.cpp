// QuantSpec / QuantConfig: spellings, JSON round trips, equality and clear errors.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "quant/factory.h"
#include "quant/quant_spec.h"

namespace quest {
namespace {

// Expects quest::Error whose message contains `needle`.
template <class F>
void expect_error(F&& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one mentioning '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(QuantSpec, RoundTripsThroughStringAndJson) {
  for (const char* text :
       {"none", "ste:4", "clip:4", "clip:4:c=1.5", "trust:2", "trust:3:t=0.25", "hadamard-trust:4",
        "hadamard-trust:1", "hadamard-trust:1:c=1.1", "hadamard-trust:1:t=0.9", "hadamard-clip:3:c=0.75",
        "hadamard-ste:8", "lsq:2", "pact:1", "pact:8", "fp4", "hadamard-fp4", "fp4:t=0.3",
        "sparse48:4", "hadamard-sparse48:4", "hadamard-sparse48:2:t=0.125"}) {
    SCOPED_TRACE(text);
    const QuantSpec s = QuantSpec::parse(text);
    EXPECT_EQ(s.to_string(), text);  // these are canonical spellings
    EXPECT_EQ(QuantSpec::parse(s.to_string()), s);
    const nlohmann::json j = s;
    const QuantSpec back = nlohmann::json::parse(j.dump()).get<QuantSpec>();
    EXPECT_EQ(back, s);
    EXPECT_EQ(back.to_string(), s.to_string());
    EXPECT_FALSE(s.describe().empty());
  }
}

TEST(QuantSpec, AliasesAndSemanticEquality) {
  EXPECT_EQ(QuantSpec::parse("quest:4").to_string(), "hadamard-trust:4");
  EXPECT_EQ(QuantSpec::parse("bf16"), QuantSpec::none());
  EXPECT_EQ(QuantSpec::parse("fp32").to_string(), "none");
  EXPECT_EQ(QuantSpec::parse("fp4:4"), QuantSpec::parse("fp4"));
  EXPECT_EQ(QuantSpec::parse("quest:1"), QuantSpec::parse("hadamard-trust:1:c=1.3"));
  EXPECT_EQ(QuantSpec::parse("clip:4"), QuantSpec::parse("clip:4:c=1"));
  EXPECT_FALSE(QuantSpec::parse("quest:4") == QuantSpec::parse("trust:4"));
  EXPECT_FALSE(QuantSpec::parse("quest:4") == QuantSpec::parse("quest:3"));
  EXPECT_FALSE(QuantSpec::parse("clip:4:c=1.5") == QuantSpec::parse("clip:4"));
  EXPECT_NE(QuantSpec::parse("quest:4").describe().find("QuEST"), std::string::npos);
}

TEST(QuantSpec, ClearErrors) {
  expect_error([] { QuantSpec::parse("lsq:1"); }, "LSQ has no 1-bit form");
  expect_error([] { QuantSpec::parse("trust:9"); }, "bits must be 1..8");
  expect_error([] { QuantSpec::parse("trust:0"); }, "bits must be 1..8");
  expect_error([] { QuantSpec::parse("trust"); }, "needs a bit width");
  expect_error([] { QuantSpec::parse("trust:x"); }, "not a bit width");
  expect_error([] { QuantSpec::parse("quantum:4"); }, "unknown name 'quantum'");
  expect_error([] { QuantSpec::parse("hadamard-lsq:4"); }, "no Hadamard form");
  expect_error([] { QuantSpec::parse("ste:4:c=2"); }, "c= (clip factor) applies to");
  expect_error([] { QuantSpec::parse("trust:4:c=2"); }, "c= (clip factor) applies to");
  expect_error([] { QuantSpec::parse("clip:4:t=2"); }, "t= (trust factor) applies to");
  expect_error([] { QuantSpec::parse("clip:4:c=-1"); }, "must be positive");
  expect_error([] { QuantSpec::parse("clip:4:c=abc"); }, "needs a number");
  expect_error([] { QuantSpec::parse("clip:4:z=1"); }, "unknown parameter 'z'");
  expect_error([] { QuantSpec::parse("quest:1:c=1.3:t=1"); }, "not both");
  expect_error([] { QuantSpec::parse("none:4"); }, "none takes no");
  expect_error([] { QuantSpec::parse("fp4:8"); }, "fp4 (e2m1) is 4-bit");
  expect_error([] { QuantSpec::parse(""); }, "empty");
  expect_error([] { make_quantizer(QuantSpec::parse("quest:4"), QuantRole::Input, 96); },
               "multiple of 128, got 96");
  expect_error([] { make_quantizer(QuantSpec::parse("hadamard-sparse48:4"), QuantRole::Input); },
               "weights only");
  expect_error([] { nlohmann::json::parse(R"({"kind":"lsq","bits":1})").get<QuantSpec>(); },
               "LSQ has no 1-bit form");
  expect_error([] { nlohmann::json::parse(R"({"kind":"trust","bits":4,"x":1})").get<QuantSpec>(); },
               "unknown key 'x'");
}

TEST(QuantConfig, ShortSpelling) {
  const auto quest4 = QuantConfig::from_command_line("--quant quest --bits 4");
  EXPECT_EQ(quest4, QuantConfig::parse("w=hadamard-trust:4,a=hadamard-trust:4,form=half"));
  EXPECT_EQ(quest4.to_string(), "w=hadamard-trust:4,a=hadamard-trust:4,form=half");
  EXPECT_EQ(QuantConfig::from_command_line("--quant lsq --w-bits 2 --a-bits 2").to_string(),
            "w=lsq:2,a=lsq:2,form=half");
  EXPECT_EQ(QuantConfig::from_command_line("--quant ste --bits 4").to_string(), "w=ste:4,a=ste:4,form=half");
  EXPECT_EQ(QuantConfig::from_command_line("--quant quest --bits 4 --a-bits 8").to_string(),
            "w=hadamard-trust:4,a=hadamard-trust:8,form=half");
  EXPECT_EQ(QuantConfig::from_command_line("--quant=quest --bits=1 --quant-form=full").to_string(),
            "w=hadamard-trust:1,a=hadamard-trust:1,form=full");
  EXPECT_EQ(QuantConfig::from_command_line("--quant none"), QuantConfig::none());
  EXPECT_EQ(QuantConfig::from_command_line("--quant bf16"), QuantConfig::none());
  EXPECT_EQ(QuantConfig::from_command_line(""), QuantConfig::none());
  EXPECT_FALSE(QuantConfig::none().quantized());
  const auto wonly = QuantConfig::from_command_line("--quant quest --bits 4 --weight-only");
  EXPECT_EQ(wonly.to_string(), "w=hadamard-trust:4,a=none,form=half");
  EXPECT_EQ(QuantConfig::from_command_line("--w-quant hadamard-trust:4"), wonly);
  EXPECT_EQ(QuantConfig::from_command_line("--w-quant clip:4:c=1.5 --a-quant pact:8").to_string(),
            "w=clip:4:c=1.5,a=pact:8,form=half");
  EXPECT_EQ(QuantConfig::from_command_line("--quant hadamard-sparse48 --bits 4").to_string(),
            "w=hadamard-sparse48:4,a=hadamard-trust:4,form=half");
  EXPECT_EQ(QuantConfig::from_command_line("--quant hadamard-fp4").to_string(),
            "w=hadamard-fp4,a=hadamard-fp4,form=half");
  EXPECT_EQ(QuantConfig::parse("w=quest:4"), wonly);  // a missing role is none

  expect_error([] { QuantConfig::from_command_line("--quant quest"); }, "needs --w-bits");
  expect_error([] { QuantConfig::from_command_line("--quant quest --w-bits 4"); }, "needs --a-bits");
  expect_error([] { QuantConfig::from_command_line("--quant lsq --bits 1"); }, "LSQ has no 1-bit form");
  expect_error([] { QuantConfig::from_command_line("--quant quest --bits 9"); }, "bits must be 1..8");
  expect_error([] { QuantConfig::from_command_line("--quant none --bits 4"); }, "takes no --bits");
  expect_error([] { QuantConfig::from_command_line("--quant quest:4"); }, "--quant takes a name");
  expect_error([] { QuantConfig::from_command_line("--quant foo --bits 4"); }, "unknown name 'foo'");
  expect_error([] { QuantConfig::from_command_line("--quant quest --w-quant ste:4"); },
               "cannot be combined");
  expect_error([] { QuantConfig::from_command_line("--w-quant ste:4 --bits 4"); }, "inside the spelling");
  expect_error([] { QuantConfig::from_command_line("--a-quant hadamard-sparse48:4"); }, "weights only");
  expect_error([] { QuantConfig::from_command_line("--quant quest --bits 4 --quant-form twice"); },
               "half or full");
  expect_error([] { QuantConfig::from_command_line("--quant quest --bits"); }, "needs a value");
  expect_error([] { QuantConfig::from_command_line("--quant quest --bits four"); }, "needs an integer");
  expect_error([] { QuantConfig::from_command_line("--bogus 1"); }, "unknown option '--bogus'");
  expect_error([] { QuantConfig::parse("w=quest:4,x=1"); }, "unknown key 'x'");
  expect_error([] { QuantConfig::parse("w=quest:4,w=ste:4"); }, "given twice");
}

TEST(QuantConfig, JsonEqualityAndDescribe) {
  for (const char* text : {"w=hadamard-trust:4,a=hadamard-trust:4,form=half",
                           "w=hadamard-trust:1:c=1.2,a=hadamard-trust:1,form=full",
                           "w=lsq:2,a=lsq:2,form=half", "w=hadamard-sparse48:4,a=none,form=full",
                           "w=none,a=none,form=half"}) {
    SCOPED_TRACE(text);
    const QuantConfig c = QuantConfig::parse(text);
    EXPECT_EQ(c.to_string(), text);
    const nlohmann::json j = c;
    const QuantConfig back = nlohmann::json::parse(j.dump()).get<QuantConfig>();
    EXPECT_EQ(back, c);
    EXPECT_EQ(back.to_string(), text);
    EXPECT_EQ(c.difference(back), "");
  }
  const auto a = QuantConfig::parse("w=quest:4,a=quest:4");
  const auto b = QuantConfig::parse("w=quest:4,a=quest:4,form=full");
  EXPECT_TRUE(a.same_quantization(b));  // the form is an execution choice
  EXPECT_FALSE(a == b);
  const auto c = QuantConfig::parse("w=quest:2,a=quest:4");
  EXPECT_FALSE(a.same_quantization(c));
  EXPECT_EQ(a.difference(c), "weights hadamard-trust:4 vs hadamard-trust:2");
  EXPECT_EQ(a.describe().substr(0, 6), "W4A4: ");
  EXPECT_NE(a.describe().find("Hadamard form half"), std::string::npos);
  EXPECT_EQ(QuantConfig::none().describe().substr(0, 8), "W32A32: ");
  EXPECT_EQ(QuantConfig::parse("w=quest:4").describe().substr(0, 7), "W4A32: ");
}

}  // namespace
}  // namespace quest
