// Starting local ranks and reading this process's rank, for the `lathe` command.
#include "lathe/run/process.h"

#include "lathe/dist/launch.h"
#include "lathe/dist/process_group.h"

namespace lathe::run {

int launch_local_ranks(const std::vector<std::string>& args, int processes) {
  return dist::launch_local(args, {.processes = processes});
}

Rank this_rank() {
  const dist::World world = dist::world_from_env();
  return {.distributed = world.active(), .main = world.is_main()};
}

}  // namespace lathe::run
