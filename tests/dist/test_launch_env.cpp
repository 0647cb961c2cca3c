// Reading rank and world size from the launchers' variables: mpirun, PMI, srun, torchrun-style.
#include <gtest/gtest.h>

#include <map>
#include <string>

#include "core/error.h"
#include "dist/launch_env.h"
#include "dist/world.h"

namespace quest {
namespace {

LaunchEnv read(const std::map<std::string, std::string>& vars) {
  return read_launch_env([&](const char* name) -> const char* {
    auto it = vars.find(name);
    return it == vars.end() ? nullptr : it->second.c_str();
  });
}

TEST(LaunchEnv, NothingSetIsOneProcess) {
  const LaunchEnv e = read({});
  EXPECT_EQ(e.world_size, 1);
  EXPECT_EQ(e.rank, 0);
  EXPECT_EQ(e.source, "none");
}

TEST(LaunchEnv, OpenMpiVariables) {
  const LaunchEnv e = read({{"OMPI_COMM_WORLD_RANK", "3"}, {"OMPI_COMM_WORLD_SIZE", "4"},
                            {"OMPI_COMM_WORLD_LOCAL_RANK", "1"}});
  EXPECT_EQ(e.rank, 3);
  EXPECT_EQ(e.world_size, 4);
  EXPECT_EQ(e.local_rank, 1);
  EXPECT_EQ(e.source, "openmpi");
}

TEST(LaunchEnv, SlurmOnlyInsideAJobStep) {
  const std::map<std::string, std::string> batch = {
      {"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "8"}, {"SLURM_LOCALID", "0"}};
  EXPECT_EQ(read(batch).world_size, 1);  // the batch script itself is one process
  auto step = batch;
  step["SLURM_STEP_ID"] = "0";
  step["SLURM_PROCID"] = "5";
  step["SLURM_LOCALID"] = "1";
  const LaunchEnv e = read(step);
  EXPECT_EQ(e.world_size, 8);
  EXPECT_EQ(e.rank, 5);
  EXPECT_EQ(e.local_rank, 1);
  EXPECT_EQ(e.source, "slurm");
}

TEST(LaunchEnv, TorchrunStyleWithMaster) {
  const LaunchEnv e = read({{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"LOCAL_RANK", "1"},
                            {"MASTER_ADDR", "node0"}, {"MASTER_PORT", "29500"}});
  EXPECT_EQ(e.rank, 1);
  EXPECT_EQ(e.world_size, 2);
  EXPECT_EQ(e.source, "env");
  EXPECT_EQ(e.master_addr, "node0");
  EXPECT_EQ(e.master_port, 29500);
}

TEST(LaunchEnv, MpiLauncherWinsOverOtherSets) {
  const LaunchEnv e = read({{"OMPI_COMM_WORLD_RANK", "0"}, {"OMPI_COMM_WORLD_SIZE", "2"},
                            {"RANK", "0"}, {"WORLD_SIZE", "2"}, {"SLURM_STEP_ID", "0"},
                            {"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "1"}});
  EXPECT_EQ(e.source, "openmpi");
  EXPECT_EQ(e.world_size, 2);
}

TEST(LaunchEnv, MalformedValuesAreErrors) {
  EXPECT_THROW(read({{"RANK", "x"}, {"WORLD_SIZE", "2"}}), Error);
  EXPECT_THROW(read({{"RANK", "2"}, {"WORLD_SIZE", "2"}}), Error);
  EXPECT_THROW(read({{"RANK", "0"}, {"WORLD_SIZE", "0"}}), Error);
  EXPECT_THROW(read({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_PORT", "http"}}), Error);
}

TEST(LaunchEnv, OneProcessNeedsNoMpi) {
  EXPECT_EQ(make_world_communicator(read({}), 1.0)->backend(), "single");
}

}  // namespace
}  // namespace quest
