// test_dist's main: the tests run on every rank with the job's communicator. Under mpirun, the
// first failing test ends the whole job, so ranks never wait for a peer that left a collective.
#include <gtest/gtest.h>

#include <memory>

#include "core/error.h"
#include "dist/launch_env.h"
#include "dist/world.h"
#include "dist/test_world.h"

namespace quest::test {

namespace {
std::unique_ptr<Communicator> g_world;

class AbortOnFailure : public ::testing::EmptyTestEventListener {
  void OnTestEnd(const ::testing::TestInfo& info) override {
    if (info.result()->Failed() && g_world->size() > 1) {
      fflush(stdout);
      g_world->abort(1);
    }
  }
};
}  // namespace

Communicator& world() { return *g_world; }

}  // namespace quest::test

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  // Short timeout: a test that desynchronizes the ranks fails in seconds, not minutes.
  quest::test::g_world = quest::make_world_communicator(quest::read_launch_env(), 30.0);
  ::testing::UnitTest::GetInstance()->listeners().Append(new quest::test::AbortOnFailure);
  const int rc = RUN_ALL_TESTS();
  quest::test::g_world.reset();
  return rc;
}
