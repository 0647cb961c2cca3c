#include "cli/job.h"

#include <cstdio>
#include <exception>
#include <string>

#include "core/log.h"
#include "dist/launch_env.h"
#include "dist/world.h"

namespace quest::cli {

std::unique_ptr<Communicator> join_job(double timeout_s) {
  const LaunchEnv env = read_launch_env();
  auto comm = make_world_communicator(env, timeout_s);
  if (comm->rank() != 0) {
    const int rank = comm->rank();
    set_log_sink([rank](LogLevel level, std::string_view text) {
      if (level != LogLevel::Warning) return;  // rank 0 reports progress for the job
      std::fprintf(stderr, "warning: [rank %d] %.*s\n", rank, int(text.size()), text.data());
    });
  }
  return comm;
}

void run_in_job(Communicator& comm, const std::function<void()>& body) {
  if (comm.size() == 1) return body();
  try {
    body();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: [rank %d of %d] %s\n", comm.rank(), comm.size(), e.what());
    std::fflush(stderr);
    comm.abort(1);
  }
}

}  // namespace quest::cli
