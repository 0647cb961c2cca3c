#pragma once
// The communicator of the test process: one process under plain ctest, every rank under
// `mpirun -np N test_dist` (main.cpp builds it from the launch environment).
#include "dist/communicator.h"

namespace quest::test {

Communicator& world();

}  // namespace quest::test
