#pragma once
// Text generation: a KV-cache decoder over a trained Model, and sampling (temperature, top-k,
// seed). The cache holds each layer's keys and values, so a new token costs one row of work.
#include <cstdint>
#include <functional>
#include <vector>

#include "core/rng.h"
#include "model/llama.h"

namespace quest {

class KvCacheDecoder {
 public:
  // max_len <= the model's seq_len; the model's weights must be prepared (prepare_weights()).
  KvCacheDecoder(Model& model, int64_t max_len);
  void reset() { length_ = 0; }
  int64_t length() const { return length_; }
  int64_t max_len() const { return max_len_; }
  // Appends n tokens (a prompt, or one sampled token) and writes the logits [vocab_size] of the
  // last one.
  void feed(const int32_t* tokens, int64_t n, float* logits);

 private:
  Model& model_;
  int64_t max_len_, length_ = 0;
  std::vector<float> k_cache_, v_cache_;  // [layer][max_len, d]
  std::vector<float> x_, ln_, qkv_, q_, att_, tmp_, a_, b_, g_, logits_;
};

struct SampleOptions {
  float temperature = 0.8f;  // 0 = greedy
  int64_t top_k = 40;        // 0 = the whole vocabulary
  uint64_t seed = 0;
  int64_t max_new_tokens = 200;
  bool use_cache = true;
};

// Draws a token from logits[V] (modified in place).
int32_t sample_token(float* logits, int64_t V, const SampleOptions& opt, Rng& rng);

// Continues `prompt`; calls on_token for each new token (for streaming output). Once the context
// is full, it keeps the last half of it, in both modes, so cached and uncached decoding agree.
std::vector<int32_t> generate(Model& model, const std::vector<int32_t>& prompt,
                              const SampleOptions& opt,
                              const std::function<void(int32_t)>& on_token = {});

}  // namespace quest
