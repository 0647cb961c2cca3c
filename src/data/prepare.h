#pragma once
// `quest prepare` as a library call: corpus files in, llm.c-format token shards and meta.json out.
//
// Documents are read in input order, assigned to train or validation (SplitAssigner), tokenized
// on worker threads in batches and written in order, each preceded (or followed) by the
// tokenizer's separator, so the output is byte-identical for any thread count. Memory stays
// bounded: a few batches in flight plus one shard buffer per split. Every file is written to a
// temporary name and renamed; on failure the shards of this run are deleted again, and meta.json,
// written last, marks a finished run.
#include <atomic>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "data/text_source.h"
#include "data/tokenize_pool.h"
#include "data/tokenizer.h"

namespace quest {

struct PrepareOptions {
  std::vector<std::string> inputs;      // files, directories, glob patterns
  std::vector<std::string> val_inputs;  // optional: documents that all go to validation
  std::string out_dir;
  std::string tokenizer = "gpt2";  // for prepare_corpus(options): see load_tokenizer()
  InputFormat format = InputFormat::Auto;
  std::string text_field = "text";  // JSONL
  int split_blank_lines = 0;        // plain text: 0 = a file is a document (see TextSourceOptions)
  bool skip_bad = false;            // skip and count bad records instead of failing
  // Validation documents taken from `inputs`: a fraction, or (when set) an exact count. Defaults:
  // 5%, or none when val_inputs are given.
  std::optional<double> val_fraction;
  std::optional<uint64_t> val_documents;
  uint64_t seed = 1337;
  EotPosition eot = EotPosition::Before;
  uint64_t shard_tokens = 100'000'000;  // llm.c's shard size
  int threads = 0;                      // tokenizer threads; 0 = all cores
  bool overwrite = false;               // replace existing shards and meta.json in output_dir
  bool progress = true;                 // progress lines (log_progress) after the first second
  const std::atomic<bool>* cancel = nullptr;  // when it becomes true: stop with an error
};

struct SplitReport {
  uint64_t documents = 0, tokens = 0, text_bytes = 0, skipped_bad = 0;
  std::vector<std::string> files;
};

struct PrepareReport {
  SplitReport train, val;
  uint64_t skipped_bad = 0;
  uint64_t input_bytes = 0;  // bytes read from the input files (compressed size for .zst)
  double seconds = 0;
  int threads = 0;
  std::string tokenizer;
  int32_t vocab_size = 0;
};

// Throws quest::Error on bad input (unless skip_bad), on an empty corpus, on existing output
// without overwrite, and when cancelled. options.tokenizer is ignored by the first form.
PrepareReport prepare_corpus(const PrepareOptions& options, const Tokenizer& tokenizer);
// Loads options.tokenizer (load_tokenizer()) and prepares with it.
PrepareReport prepare_corpus(const PrepareOptions& options);

// "before" | "after"
EotPosition parse_eot_position(const std::string& name);
const char* eot_position_name(EotPosition p);

}  // namespace quest
