#include "cli/sample_text.h"

#include <cstdio>

#include "core/error.h"
#include "data/load_tokenizer.h"

namespace quest::cli {

std::unique_ptr<Tokenizer> tokenizer_for(const std::string& name) { return load_tokenizer(name); }

void print_sample(Model& model, const Tokenizer& tokenizer, const std::string& prompt,
                  const SampleOptions& opt) {
  std::vector<int32_t> tokens = tokenizer.encode(prompt);
  if (tokens.empty()) tokens.push_back(tokenizer.eot_token());
  std::fprintf(stdout, "----- sample -----\n%s", prompt.c_str());
  std::fflush(stdout);
  // Decode the growing continuation and print what is new: a token can end mid-character.
  std::vector<int32_t> out;
  size_t printed = 0;
  generate(model, tokens, opt, [&](int32_t t) {
    out.push_back(t);
    const std::string text = tokenizer.decode(out);
    if (text.size() > printed) {
      std::fwrite(text.data() + printed, 1, text.size() - printed, stdout);
      std::fflush(stdout);
      printed = text.size();
    }
  });
  std::fprintf(stdout, "\n------------------\n");
}

}  // namespace quest::cli
