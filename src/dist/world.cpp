#include "dist/world.h"

#include "core/error.h"
#include "dist/single_communicator.h"
#ifdef QUEST_HAVE_MPI
#include "dist/mpi/mpi_communicator.h"
#endif

namespace quest {

bool mpi_available() {
#ifdef QUEST_HAVE_MPI
  return true;
#else
  return false;
#endif
}

std::unique_ptr<Communicator> make_world_communicator(const LaunchEnv& env, double timeout_s) {
  if (env.world_size == 1) return std::make_unique<SingleCommunicator>();
#ifdef QUEST_HAVE_MPI
  auto comm = std::make_unique<MpiCommunicator>(timeout_s);
  if (comm->size() != env.world_size || comm->rank() != env.rank) {
    const int size = comm->size(), rank = comm->rank();
    if (size == 1) comm.reset();  // a lone process can finalize; a real job must abort
    fail("the launch environment says {}, but MPI sees rank {} of {}: quest's data-parallel "
         "training connects its ranks through MPI, so start them with `mpirun -np N quest train "
         "...` or `srun --mpi=pmix quest train ...` (RANK/WORLD_SIZE/MASTER_ADDR alone do not "
         "connect processes)",
         env.describe(), rank, size);
  }
  return comm;
#else
  fail("the launch environment says {}, but this quest was built without MPI: install OpenMPI "
       "(libopenmpi-dev openmpi-bin, or scripts/setup.sh) and rebuild",
       env.describe());
#endif
}

}  // namespace quest
