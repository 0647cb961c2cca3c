#pragma once
// Helpers that make the ranks of a job agree before they train together.
#include <string>
#include <string_view>
#include <vector>

#include "dist/communicator.h"

namespace quest {

// Every rank passes its own `text` (e.g. its training config as JSON); throws quest::Error on
// every rank when any rank's text differs from rank 0's, naming the ranks that differ.
void require_same_on_all_ranks(Communicator& comm, std::string_view text, std::string_view what);

// Root's `bytes` on every rank (other ranks' input is ignored), e.g. a checkpoint file read once.
std::vector<char> broadcast_bytes(Communicator& comm, std::vector<char> bytes, int root = 0);

// 64-bit FNV-1a: a quick fingerprint of a config (not a cryptographic hash).
uint64_t fingerprint(std::string_view text);

}  // namespace quest
