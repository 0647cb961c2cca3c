#pragma once
// Where set-up puts what it fetches: $QUEST_CACHE, or ~/.cache/quest.
#include <string>

namespace quest::cli {

std::string cache_dir();
// The default corpus (Moby Dick) prepared with GPT-2 BPE; prepared on first use from the
// set-up's download. Throws with a pointer to scripts/setup.sh when the download is missing.
std::string default_data_dir();

}  // namespace quest::cli
