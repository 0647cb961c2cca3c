#include "dist/agree.h"

#include <fmt/format.h>

#include <cstdint>

#include "core/error.h"

namespace quest {

uint64_t fingerprint(std::string_view text) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : text) h = (h ^ c) * 1099511628211ull;
  return h;
}

void require_same_on_all_ranks(Communicator& comm, std::string_view text, std::string_view what) {
  if (comm.size() == 1) return;
  const uint64_t mine = fingerprint(text);
  uint64_t root = mine;
  comm.broadcast(&root, sizeof root, 0);
  // Every rank learns which ranks differ (a vector of flags summed), so all of them fail together
  // with the same message instead of some waiting for the others.
  std::vector<double> differs(size_t(comm.size()), 0.0);
  differs[size_t(comm.rank())] = mine != root ? 1.0 : 0.0;
  comm.all_reduce_sum(differs.data(), int64_t(differs.size()));
  std::string ranks;
  for (size_t r = 0; r < differs.size(); ++r)
    if (differs[r] != 0.0) ranks += fmt::format("{}{}", ranks.empty() ? "" : ", ", r);
  QUEST_CHECK(ranks.empty(),
              "the {} of rank(s) {} differs from rank 0's (fingerprint {:016x} here, {:016x} on rank "
              "0): every rank must be started with the same options and data",
              what, ranks, mine, root);
}

std::vector<char> broadcast_bytes(Communicator& comm, std::vector<char> bytes, int root) {
  if (comm.size() == 1) return bytes;
  uint64_t n = comm.rank() == root ? bytes.size() : 0;
  comm.broadcast(&n, sizeof n, root);
  bytes.resize(n);
  comm.broadcast(bytes.data(), int64_t(n), root);
  return bytes;
}

}  // namespace quest
