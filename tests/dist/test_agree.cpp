// Ranks agree on their config before training; checkpoint bytes reach every rank.
#include <gtest/gtest.h>

#include <string>

#include "core/error.h"
#include "dist/agree.h"
#include "dist/test_world.h"

namespace quest {
namespace {

using test::world;

TEST(Agree, SameTextPasses) {
  EXPECT_NO_THROW(require_same_on_all_ranks(world(), "{\"lr\":0.001}", "config"));
}

TEST(Agree, DifferentTextFailsOnEveryRankNamingTheRank) {
  Communicator& c = world();
  if (c.size() == 1) GTEST_SKIP() << "needs several ranks (mpirun)";
  // The last rank differs; every rank, including those that agree with rank 0, must throw.
  const std::string text = c.rank() == c.size() - 1 ? "seed=2" : "seed=1";
  try {
    require_same_on_all_ranks(c, text, "training config");
    ADD_FAILURE() << "no error on rank " << c.rank();
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("training config of rank(s) " + std::to_string(c.size() - 1)), std::string::npos) << msg;
  }
}

TEST(Agree, BroadcastBytesSendsRootsBuffer) {
  Communicator& c = world();
  std::vector<char> mine(size_t(5 + c.rank()), char('a' + c.rank()));
  const std::vector<char> got = broadcast_bytes(c, mine, 0);
  EXPECT_EQ(got, std::vector<char>(5, 'a'));
}

TEST(Agree, FingerprintSeesOneCharacter) {
  EXPECT_NE(fingerprint("steps=10"), fingerprint("steps=11"));
  EXPECT_EQ(fingerprint("x"), fingerprint("x"));
}

}  // namespace
}  // namespace quest
