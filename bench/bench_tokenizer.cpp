// GPT-2 encode throughput, one thread: MB/s on a text file, first pass (cold word cache) and the
// best of the later passes (warm cache).
//
//   bench_tokenizer [FILE] [--passes 5] [--gpt2-dir DIR]
//   FILE defaults to $QUEST_CACHE/corpora/moby-dick.txt (fetched by scripts/setup.sh).
//
// A plain main(): when Google Benchmark is linked, its main is not.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "core/error.h"
#include "core/file_io.h"
#include "data/gpt2_tokenizer.h"

int main(int argc, char** argv) {
  try {
    std::string dir = quest::default_gpt2_dir();
    std::string file = dir.substr(0, dir.rfind('/')) + "/corpora/moby-dick.txt";
    int passes = 5;
    for (int i = 1; i < argc; ++i) {
      if (std::strcmp(argv[i], "--passes") == 0 && i + 1 < argc) {
        passes = std::max(2, std::atoi(argv[++i]));
      } else if (std::strcmp(argv[i], "--gpt2-dir") == 0 && i + 1 < argc) {
        dir = argv[++i];
      } else {
        file = argv[i];
      }
    }
    const auto tok = quest::Gpt2Tokenizer::load(dir);
    const std::string text = quest::read_text_file(file);
    const double mb = static_cast<double>(text.size()) / 1e6;
    double first = 0, best = 1e30;
    size_t tokens = 0;
    for (int p = 0; p < passes; ++p) {
      const auto t0 = std::chrono::steady_clock::now();
      tokens = tok->encode(text).size();
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (p == 0) first = s;
      else best = std::min(best, s);
    }
    std::printf("%s: %.2f MB, %zu tokens (%.2f bytes/token)\n", file.c_str(), mb, tokens,
                static_cast<double>(text.size()) / static_cast<double>(tokens));
    std::printf("encode, 1 thread: cold cache %.1f MB/s, warm cache %.1f MB/s\n", mb / first,
                mb / best);
    return 0;
  } catch (const quest::Error& e) {
    std::fprintf(stderr, "bench_tokenizer: %s\n", e.what());
    return 1;
  }
}
