#pragma once
// Which split a document goes to: decided per document from a hash of (seed, document index), so
// a fraction can be applied while streaming; an exact count takes the documents with the smallest
// hashes (which needs the number of documents first).
#include <cstdint>
#include <vector>

namespace quest {

// A well-mixed 64-bit hash of (seed, index).
uint64_t document_hash(uint64_t seed, uint64_t index);

class SplitAssigner {
 public:
  // Each document goes to validation with probability `fraction` (in [0, 1]).
  static SplitAssigner fraction(double fraction, uint64_t seed);
  // Exactly `count` of the `documents` documents go to validation (throws when count > documents).
  static SplitAssigner count(uint64_t count, uint64_t documents, uint64_t seed);

  bool is_validation(uint64_t index) const;

 private:
  SplitAssigner() = default;
  uint64_t seed_ = 0;
  bool by_count_ = false;
  uint64_t threshold_ = 0;           // fraction: hash < threshold (all when full_)
  bool full_ = false;
  std::vector<uint64_t> selected_;   // count: the chosen indices, sorted
};

}  // namespace quest
