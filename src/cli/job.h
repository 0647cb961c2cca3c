#pragma once
// `quest train` as one rank of a data-parallel job: joins the job its launcher started (mpirun,
// srun; see dist/launch_env.h), leaves the console to rank 0, and ends the whole job when this
// rank fails, so that no peer waits for it.
#include <functional>
#include <memory>

#include "dist/communicator.h"

namespace quest::cli {

// The job's communicator (one process when no launcher started this one). Ranks other than 0
// keep only warnings, prefixed with their rank.
std::unique_ptr<Communicator> join_job(double timeout_s);

// Runs body(); in a job of several ranks an exception is printed with this rank's number and the
// job is aborted (every rank exits); with one process it propagates as usual.
void run_in_job(Communicator& comm, const std::function<void()>& body);

}  // namespace quest::cli
