#include "data/tokenize_pool.h"

#include "core/error.h"

namespace quest {

TokenizePool::TokenizePool(const Tokenizer& tokenizer, int threads, EotPosition eot)
    : tokenizer_(tokenizer), eot_(eot) {
  QUEST_CHECK(threads >= 1, "need at least one tokenizer thread, got {}", threads);
  for (int i = 0; i < threads; ++i) workers_.emplace_back([this] { work(); });
}

TokenizePool::~TokenizePool() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  work_cv_.notify_all();
  for (auto& w : workers_) w.join();
}

void TokenizePool::submit(TextBatch batch) {
  auto slot = std::make_shared<Slot>();
  slot->in = std::move(batch);
  slots_.push_back(slot);
  {
    std::lock_guard lock(mutex_);
    pending_.push_back(std::move(slot));
  }
  work_cv_.notify_one();
}

TokenBatch TokenizePool::wait_oldest() {
  QUEST_CHECK(!slots_.empty(), "no tokenization batch in flight");
  std::shared_ptr<Slot> slot = std::move(slots_.front());
  slots_.pop_front();
  std::unique_lock lock(mutex_);
  done_cv_.wait(lock, [&] { return slot->done; });
  if (slot->error) std::rethrow_exception(slot->error);
  return std::move(slot->out);
}

void TokenizePool::work() {
  const int32_t eot = tokenizer_.eot_token();
  while (true) {
    std::shared_ptr<Slot> slot;
    {
      std::unique_lock lock(mutex_);
      work_cv_.wait(lock, [&] { return stop_ || !pending_.empty(); });
      if (stop_) return;
      slot = std::move(pending_.front());
      pending_.pop_front();
    }
    try {
      TextBatch& in = slot->in;
      TokenBatch& out = slot->out;
      for (size_t i = 0; i < in.texts.size(); ++i) {
        const int s = in.splits[i];
        auto& tokens = out.tokens[s];
        if (eot_ == EotPosition::Before) tokens.push_back(eot);
        const auto ids = tokenizer_.encode(in.texts[i]);
        tokens.insert(tokens.end(), ids.begin(), ids.end());
        if (eot_ == EotPosition::After) tokens.push_back(eot);
        ++out.documents[s];
        out.text_bytes[s] += in.texts[i].size();
        std::string().swap(in.texts[i]);  // free the text as soon as it is tokenized
      }
    } catch (...) {
      slot->error = std::current_exception();
    }
    {
      std::lock_guard lock(mutex_);
      slot->done = true;
    }
    done_cv_.notify_all();
  }
}

}  // namespace quest
