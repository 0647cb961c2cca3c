#include "data/prepare.h"

#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <regex>
#include <thread>

#include "core/error.h"
#include "core/file_io.h"
#include "core/log.h"
#include "data/dataset_meta.h"
#include "data/load_tokenizer.h"
#include "data/split_assign.h"
#include "data/split_writer.h"

namespace quest {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

EotPosition parse_eot_position(const std::string& name) {
  if (name == "before") return EotPosition::Before;
  if (name == "after") return EotPosition::After;
  fail("unknown separator position '{}' (expected before or after)", name);
}

const char* eot_position_name(EotPosition p) {
  return p == EotPosition::Before ? "before" : "after";
}

namespace {

constexpr uint64_t kBatchBytes = 256 << 10;  // text per tokenization batch
constexpr double kMB = 1e6;

// Existing output of an earlier run: refused, or removed with overwrite.
void claim_output_dir(const std::string& dir, bool overwrite) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  QUEST_CHECK(!ec, "cannot create output directory '{}': {}", dir, ec.message());
  static const std::regex ours(R"((train|val)-\d+\.bin|meta\.json)");
  std::vector<fs::path> existing;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (std::regex_match(e.path().filename().string(), ours)) existing.push_back(e.path());
  QUEST_CHECK(!ec, "cannot list output directory '{}': {}", dir, ec.message());
  if (existing.empty()) return;
  if (!overwrite) {
    const bool finished = fs::exists(fs::path(dir) / kMetaFileName);
    fail("output directory '{}' already holds {} ({} files, e.g. '{}'); pass --overwrite to "
         "replace it",
         dir, finished ? "prepared data" : "shards of an unfinished run", existing.size(),
         existing.front().filename().string());
  }
  // meta.json first: from here on the directory no longer claims to hold a finished run.
  std::sort(existing.begin(), existing.end(), [](const fs::path& a, const fs::path& b) {
    return (a.filename() == kMetaFileName) > (b.filename() == kMetaFileName);
  });
  for (const auto& p : existing) {
    fs::remove(p, ec);
    QUEST_CHECK(!ec, "cannot remove '{}': {}", p.string(), ec.message());
  }
}

// Counts the documents of the inputs (for an exact validation count); the bad records are
// reported by the second pass.
uint64_t count_documents(const std::vector<std::string>& files, const TextSourceOptions& source) {
  DocumentReader reader(files, source);
  reader.set_warnings(false);
  Document doc;
  uint64_t n = 0;
  while (reader.next(doc)) ++n;
  return n;
}

class Progress {
 public:
  Progress(bool enabled, uint64_t total_bytes) : enabled_(enabled), total_(total_bytes) {}
  void update(uint64_t file_bytes, uint64_t text_bytes, uint64_t documents) {
    if (!enabled_) return;
    const auto now = Clock::now();
    const double elapsed = std::chrono::duration<double>(now - start_).count();
    if (elapsed < 1.0 || now - last_ < std::chrono::milliseconds(500)) return;
    last_ = now;
    log_progress("prepare: {:.1f}% of the input, {:.1f} MB of text, {:.1f} MB/s, {} documents",
                 total_ ? 100.0 * double(file_bytes) / double(total_) : 100.0,
                 double(text_bytes) / kMB, double(text_bytes) / kMB / elapsed, documents);
  }
  double seconds() const { return std::chrono::duration<double>(Clock::now() - start_).count(); }

 private:
  bool enabled_;
  uint64_t total_;
  Clock::time_point start_ = Clock::now(), last_ = start_;
};

void write_meta(const PrepareOptions& o, const Tokenizer& tok, const PrepareReport& r,
                const std::vector<std::string>& inputs, const std::vector<std::string>& val_inputs,
                int width) {
  nlohmann::ordered_json j;
  j["format"] = "quest-token-shards";
  j["format_version"] = 1;
  j["tokenizer"] = tok.name();
  j["vocab_size"] = tok.vocab_size();
  j["eot_token"] = tok.eot_token();
  j["eot_position"] = eot_position_name(o.eot);
  j["token_bytes"] = width;
  auto split_json = [](const SplitReport& s) {
    nlohmann::ordered_json sj;
    sj["tokens"] = s.tokens;
    sj["text_bytes"] = s.text_bytes;
    sj["documents"] = s.documents;
    sj["skipped_bad"] = s.skipped_bad;
    sj["files"] = s.files;
    return sj;
  };
  j["splits"]["train"] = split_json(r.train);
  j["splits"]["val"] = split_json(r.val);
  j["skipped_bad"] = r.skipped_bad;
  j["seed"] = o.seed;
  if (o.val_documents) j["val_documents"] = *o.val_documents;
  else j["val_fraction"] = *o.val_fraction;
  j["shard_tokens"] = o.shard_tokens;
  j["text_field"] = o.text_field;
  j["split_blank_lines"] = o.split_blank_lines;
  j["inputs"] = inputs;
  j["val_inputs"] = val_inputs;
  AtomicFile f(o.out_dir + "/" + kMetaFileName);
  f.write(j.dump(2) + "\n");
  f.commit();
}

}  // namespace

PrepareReport prepare_corpus(const PrepareOptions& options, const Tokenizer& tokenizer) {
  PrepareOptions o = options;
  QUEST_CHECK(!o.out_dir.empty(), "no output directory given");
  QUEST_CHECK(!o.inputs.empty() || !o.val_inputs.empty(), "no input files given");
  QUEST_CHECK(o.threads >= 0, "the thread count must be >= 0, got {}", o.threads);
  if (!o.val_fraction && !o.val_documents) o.val_fraction = o.val_inputs.empty() ? 0.05 : 0.0;
  QUEST_CHECK(!(o.val_fraction && o.val_documents),
              "give either a validation fraction or a validation document count, not both");
  const int threads =
      o.threads > 0 ? o.threads : int(std::max(1u, std::thread::hardware_concurrency()));
  const int32_t vocab = tokenizer.vocab_size();

  TextSourceOptions source;
  source.format = o.format;
  source.text_field = o.text_field;
  source.split_blank_lines = o.split_blank_lines;
  source.skip_bad = o.skip_bad;
  const auto inputs = o.inputs.empty() ? std::vector<std::string>{} : expand_inputs(o.inputs);
  const auto val_inputs =
      o.val_inputs.empty() ? std::vector<std::string>{} : expand_inputs(o.val_inputs);
  const SplitAssigner assigner =
      o.val_documents
          ? SplitAssigner::count(*o.val_documents, count_documents(inputs, source), o.seed)
          : SplitAssigner::fraction(*o.val_fraction, o.seed);
  claim_output_dir(o.out_dir, o.overwrite);

  PrepareReport r;
  r.threads = threads;
  r.tokenizer = tokenizer.name();
  r.vocab_size = vocab;
  SplitWriter writers[2] = {SplitWriter(o.out_dir, "train", o.shard_tokens, vocab),
                            SplitWriter(o.out_dir, "val", o.shard_tokens, vocab)};
  SplitReport* reports[2] = {&r.train, &r.val};
  try {
    TokenizePool pool(tokenizer, threads, o.eot);
    const size_t max_in_flight = size_t(4 * threads);
    uint64_t text_bytes = 0, documents = 0, file_bytes_done = 0;
    uint64_t total_bytes = 0;
    for (const auto* list : {&inputs, &val_inputs})
      for (const auto& f : *list) {
        std::error_code ec;
        const auto size = fs::file_size(f, ec);
        total_bytes += ec ? 0 : size;
      }
    Progress progress(o.progress, total_bytes);

    auto drain_one = [&] {
      TokenBatch b = pool.wait_oldest();
      for (int s = 0; s < 2; ++s) {
        writers[s].append(b.tokens[s]);
        reports[s]->documents += b.documents[s];
        reports[s]->text_bytes += b.text_bytes[s];
      }
    };
    TextBatch batch;
    auto submit = [&] {
      if (batch.texts.empty()) return;
      QUEST_CHECK(!(o.cancel && o.cancel->load()),
                  "interrupted (the shards written so far were removed)");
      pool.submit(std::move(batch));
      batch = TextBatch();
      while (pool.in_flight() >= max_in_flight) drain_one();
    };

    // The main inputs (split by the assigner), then the validation inputs (all validation).
    for (int pass = 0; pass < 2; ++pass) {
      const auto& files = pass == 0 ? inputs : val_inputs;
      if (files.empty()) continue;
      DocumentReader reader(files, source);
      Document doc;
      uint64_t index = 0;  // of the document among the main inputs' good documents
      auto split_of = [&](uint64_t i) { return pass == 1 || assigner.is_validation(i) ? 1 : 0; };
      while (reader.next(doc)) {
        const int s = split_of(index++);
        // Bad records skipped just before this document count for its split.
        reports[s]->skipped_bad += reader.take_new_bad_records();
        batch.bytes += doc.text.size();
        text_bytes += doc.text.size();
        ++documents;
        batch.texts.push_back(std::move(doc.text));
        batch.splits.push_back(uint8_t(s));
        if (batch.bytes >= kBatchBytes) submit();
        progress.update(file_bytes_done + reader.file_bytes_read(), text_bytes, documents);
      }
      reports[split_of(index)]->skipped_bad += reader.take_new_bad_records();
      r.skipped_bad += reader.bad_records();
      file_bytes_done += reader.file_bytes_read();
    }
    submit();
    while (pool.in_flight() > 0) drain_one();
    r.input_bytes = file_bytes_done;

    QUEST_CHECK(documents > 0, "the corpus is empty: no documents in {} input file(s){}",
                inputs.size() + val_inputs.size(),
                r.skipped_bad ? fmt::format(" after skipping {} bad records", r.skipped_bad) : "");
    QUEST_CHECK(r.train.documents > 0,
                "no training documents: all {} documents went to validation", documents);
    for (int s = 0; s < 2; ++s) {
      writers[s].finish();
      reports[s]->tokens = writers[s].tokens();
      reports[s]->files = writers[s].files();
    }
    write_meta(o, tokenizer, r, inputs, val_inputs, writers[0].token_width());
    r.seconds = progress.seconds();
  } catch (...) {
    for (auto& w : writers) w.remove_written();
    throw;
  }
  if (r.val.documents == 0 && (o.val_documents.value_or(0) > 0 || o.val_fraction.value_or(0) > 0))
    log_warning("no document went to validation (the corpus has {} documents); use "
                "--val-documents for an exact count",
                r.train.documents);
  return r;
}

PrepareReport prepare_corpus(const PrepareOptions& options) {
  const auto tokenizer = load_tokenizer(options.tokenizer);
  return prepare_corpus(options, *tokenizer);
}

}  // namespace quest
