#pragma once
// The communicator of this process's job, from its launch environment (launch_env.h).
#include <memory>

#include "dist/communicator.h"
#include "dist/launch_env.h"

namespace quest {

// World size 1: a SingleCommunicator. Otherwise MPI (mpirun, or srun with an MPI plugin); throws
// quest::Error when quest was built without MPI, or when MPI's view of the job differs from the
// launch variables (e.g. RANK/WORLD_SIZE set on processes that no MPI launcher started).
bool mpi_available();
std::unique_ptr<Communicator> make_world_communicator(const LaunchEnv& env, double timeout_s);

}  // namespace quest
