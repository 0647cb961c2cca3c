// Throughput of `quest prepare`: tokenizes a corpus into a temporary directory and prints MB/s,
// MB/s per thread, wall time and peak memory.
//   bench_prepare [CORPUS] [THREADS] [TOKENIZER]
// Defaults: the Gutenberg sample (/work/shared/data/gutenberg/train-00.jsonl.zst), 2 threads, gpt2.
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "core/error.h"
#include "data/load_tokenizer.h"
#include "data/prepare.h"
#include "data/text_source.h"

int main(int argc, char** argv) {
  const std::string corpus =
      argc > 1 ? argv[1] : "/work/shared/data/gutenberg/train-00.jsonl.zst";
  const int threads = argc > 2 ? std::atoi(argv[2]) : 2;
  const std::string tokenizer = argc > 3 ? argv[3] : "gpt2";
  namespace fs = std::filesystem;
  std::string tmpl = (fs::temp_directory_path() / "bench-prepare-XXXXXX").string();
  if (!::mkdtemp(tmpl.data())) {
    std::perror("mkdtemp");
    return 1;
  }
  int rc = 0;
  try {
    const auto t0 = std::chrono::steady_clock::now();
    const auto tok = quest::load_tokenizer(tokenizer);
    const double load_s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    quest::PrepareOptions o;
    o.inputs = {corpus};
    o.out_dir = tmpl + "/out";
    o.threads = threads;
    o.progress = false;
    const quest::PrepareReport r = quest::prepare_corpus(o, *tok);
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    const double cpu_s = double(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                         1e-6 * double(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
    const double mb = double(r.train.text_bytes + r.val.text_bytes) / 1e6;
    std::printf("corpus        %s (%.1f MB read from disk)\n", corpus.c_str(), double(r.input_bytes) / 1e6);
    std::printf("tokenizer     %s (loaded in %.2f s)\n", r.tokenizer.c_str(), load_s);
    std::printf("documents     %llu train, %llu val\n", (unsigned long long)r.train.documents,
                (unsigned long long)r.val.documents);
    std::printf("tokens        %llu (%.2f bytes of text per token)\n",
                (unsigned long long)(r.train.tokens + r.val.tokens),
                mb * 1e6 / double(r.train.tokens + r.val.tokens));
    std::printf("threads       %d\n", r.threads);
    std::printf("wall time     %.2f s (prepare only)\n", r.seconds);
    std::printf("throughput    %.2f MB/s of text, %.2f MB/s per thread\n", mb / r.seconds,
                mb / r.seconds / r.threads);
    std::printf("cpu time      %.2f s (user + system, whole process)\n", cpu_s);
    std::printf("peak RSS      %.1f MiB\n", double(ru.ru_maxrss) / 1024.0);
    // The reading side alone (decompression, JSON, UTF-8 checks) runs on one thread and bounds
    // the speed whatever the number of tokenizer threads.
    const auto t1 = std::chrono::steady_clock::now();
    quest::DocumentReader reader(quest::expand_inputs({corpus}), {});
    quest::Document doc;
    uint64_t docs = 0;
    while (reader.next(doc)) ++docs;
    const double read_s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
    std::printf("reading alone %.2f s, %.1f MB/s (%llu documents, one thread)\n", read_s,
                mb / read_s, (unsigned long long)docs);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    rc = 1;
  }
  std::error_code ec;
  fs::remove_all(tmpl, ec);
  return rc;
}
