#pragma once
// Which rank of how many this process is, from the launcher's environment variables:
//   OpenMPI's mpirun    OMPI_COMM_WORLD_RANK / _SIZE / _LOCAL_RANK
//   MPICH / PMI         PMI_RANK / PMI_SIZE (MPI_LOCALRANKID)
//   Slurm's srun        SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID (only inside a job step:
//                       SLURM_STEP_ID set; a batch script itself is one process)
//   torchrun-style      RANK / WORLD_SIZE / LOCAL_RANK (+ MASTER_ADDR / MASTER_PORT)
// The first set present wins, in this order.
#include <functional>
#include <string>

namespace quest {

struct LaunchEnv {
  int rank = 0, world_size = 1, local_rank = 0;
  std::string source = "none";  // "openmpi", "pmi", "slurm", "env" or "none"
  std::string master_addr;      // torchrun-style only
  int master_port = 0;

  std::string describe() const;  // e.g. "rank 1 of 2 (local 1) from openmpi"
};

using GetEnv = std::function<const char*(const char*)>;
// Throws quest::Error for malformed values (non-numbers, rank outside [0, world size)).
LaunchEnv read_launch_env(const GetEnv& get);
LaunchEnv read_launch_env();  // from this process's environment

}  // namespace quest
