// This process's place in a data-parallel run, as the `lathe` command needs it: starting the
// ranks of `lathe train --devices N` and asking which rank it is (dist's launcher and world).
#pragma once

#include <string>
#include <vector>

namespace lathe::run {

/// Starts `processes` ranks of this binary, each running `args` (args[0] is argv[0]), on this
/// machine the way torchrun does, and waits for them: dist::launch_local's exit code.
///
///   int rc = lathe::run::launch_local_ranks({"lathe", "train", "run.yaml"}, 2);
int launch_local_ranks(const std::vector<std::string>& args, int processes);

/// This process among the processes of one run (RANK, WORLD_SIZE from the environment).
struct Rank {
  bool distributed = false;  ///< one of several ranks (WORLD_SIZE > 1)
  bool main = true;          ///< rank 0, the one that logs and writes files
};
Rank this_rank();

}  // namespace lathe::run
