// launch_local: one process per device on this machine (`lathe train --devices N`), the way
// torchrun starts them — RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT each.
#pragma once

#include <string>
#include <vector>

namespace lathe::dist {

/// How launch_local starts and stops its processes.
struct LaunchOptions {
  int processes = 2;
  std::string program = "/proc/self/exe";  ///< the binary each rank runs
  std::string master_addr = "127.0.0.1";
  int master_port = 0;   ///< 0 = a free port picked now
  double grace_s = 3.0;  ///< after a rank fails, the others get this long to stop by
                         ///< themselves (and report why) before SIGTERM, then SIGKILL
};

/// Starts `options.processes` copies of `options.program` with `args` (args[0] is argv[0]) as
/// ranks 0..N-1 on this machine, waits for all of them, and returns 0 when all succeeded. When a
/// rank exits non-zero or dies from a signal, it says which, stops the others (grace_s, then
/// SIGTERM, then SIGKILL) and returns that rank's exit code (1 for a signal). SIGINT / SIGTERM
/// to the launcher are passed on to the ranks (each in a process group of its own, so that a
/// terminal's Ctrl-C reaches them once, through the launcher); ranks that then exit with 130 /
/// 143 (stopped on request, lathe::StopSignals) did not fail, and the launcher returns 128 + the
/// signal. Each rank also gets LATHE_LOCAL_LAUNCHER=1.
///
///   int rc = launch_local({"lathe", "train", "run.yaml"}, {.processes = 2});
///
/// A program of the user's can start itself as the ranks, each of which trains data-parallel
/// (train_from_config reads the world from the environment; examples/register_model does this):
///
///   int main(int argc, char** argv) {
///     if (std::getenv("RANK") == nullptr)  // the launcher: start 2 ranks of this program
///       return lathe::dist::launch_local({argv[0], argv[1]}, {.processes = 2});
///     lathe::run::train_from_config(lathe::config::load_config(argv[1]));  // one rank
///   }
int launch_local(const std::vector<std::string>& args, const LaunchOptions& options);

/// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then released).
int free_port();

}  // namespace lathe::dist
