#include "dist/launch_env.h"

#include <fmt/format.h>

#include <charconv>
#include <cstdlib>
#include <string_view>

#include "core/error.h"

namespace quest {

namespace {

int parse_int(const GetEnv& get, const char* name, int fallback) {
  const char* v = get(name);
  if (!v || !*v) return fallback;
  int out = 0;
  const std::string_view s(v);
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  QUEST_CHECK(ec == std::errc() && end == s.data() + s.size(),
              "launch environment: {}='{}' is not an integer", name, s);
  return out;
}

struct Source {
  const char* name;
  const char *rank, *size, *local_rank;
  const char* requires_var;  // the set counts only when this variable is present too
};

constexpr Source kSources[] = {
    {"openmpi", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK", nullptr},
    {"pmi", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", nullptr},
    {"slurm", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_STEP_ID"},
    {"env", "RANK", "WORLD_SIZE", "LOCAL_RANK", nullptr},
};

}  // namespace

std::string LaunchEnv::describe() const {
  return fmt::format("rank {} of {} (local rank {}; from {})", rank, world_size, local_rank, source);
}

LaunchEnv read_launch_env(const GetEnv& get) {
  LaunchEnv env;
  for (const Source& s : kSources) {
    if (!get(s.size) || (s.requires_var && !get(s.requires_var))) continue;
    env.source = s.name;
    env.world_size = parse_int(get, s.size, 1);
    env.rank = parse_int(get, s.rank, 0);
    env.local_rank = parse_int(get, s.local_rank, 0);
    QUEST_CHECK(env.world_size >= 1, "launch environment: {}={} is not a world size", s.size,
                env.world_size);
    QUEST_CHECK(env.rank >= 0 && env.rank < env.world_size,
                "launch environment: {}={} is outside [0, {}={})", s.rank, env.rank, s.size,
                env.world_size);
    QUEST_CHECK(env.local_rank >= 0, "launch environment: {}={} is negative", s.local_rank,
                env.local_rank);
    break;
  }
  if (const char* a = get("MASTER_ADDR")) env.master_addr = a;
  env.master_port = parse_int(get, "MASTER_PORT", 0);
  return env;
}

LaunchEnv read_launch_env() {
  return read_launch_env([](const char* name) { return std::getenv(name); });
}

}  // namespace quest
