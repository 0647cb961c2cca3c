// `quest prepare`: placeholder until the command is written (stage B).
#include "cli/commands.h"

namespace quest::cli {

void add_prepare_command(CLI::App& app) { (void)app; }

}  // namespace quest::cli
