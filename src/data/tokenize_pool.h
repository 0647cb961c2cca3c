#pragma once
// Parallel tokenization whose results come back in submission order: batches of documents go to
// worker threads and wait_oldest() returns them in order, so the output does not depend on the
// number of threads.
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "data/tokenizer.h"

namespace quest {

enum class EotPosition { Before, After };  // where the separator goes around each document

// Documents in input order, each with its split (0 = train, 1 = validation).
struct TextBatch {
  std::vector<std::string> texts;
  std::vector<uint8_t> splits;
  uint64_t bytes = 0;
};

// Per split: the tokens of the batch's documents (separators included), in order.
struct TokenBatch {
  std::vector<int32_t> tokens[2];
  uint64_t documents[2] = {0, 0};
  uint64_t text_bytes[2] = {0, 0};
};

class TokenizePool {
 public:
  TokenizePool(const Tokenizer& tokenizer, int threads, EotPosition eot);
  ~TokenizePool();  // stops the workers (pending batches are dropped)
  TokenizePool(const TokenizePool&) = delete;
  TokenizePool& operator=(const TokenizePool&) = delete;

  void submit(TextBatch batch);
  // Blocks until the oldest submitted batch is done and returns it; rethrows a worker's error.
  TokenBatch wait_oldest();
  size_t in_flight() const { return slots_.size(); }
  int threads() const { return int(workers_.size()); }

 private:
  struct Slot {
    TextBatch in;
    TokenBatch out;
    bool done = false;
    std::exception_ptr error;
  };
  void work();

  const Tokenizer& tokenizer_;
  EotPosition eot_;
  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable work_cv_, done_cv_;
  std::deque<std::shared_ptr<Slot>> slots_;    // submitted, in order (owner: the main thread)
  std::deque<std::shared_ptr<Slot>> pending_;  // not yet picked up by a worker
  bool stop_ = false;
};

}  // namespace quest
