// The `lathe` subcommands, registered on a CLI11 app; each returns the process exit code.
#pragma once

#include <CLI/CLI.hpp>

namespace lathe::cli {

/// Exit codes of the `lathe` command.
enum Exit : int {
  kOk = 0,
  kFailure = 1,  ///< the command ran and failed (data, checkpoint, training, i/o error)
  kUsage = 2,    ///< bad command line or config (unknown key, wrong type, bad override)
};

/// Adds train, eval and info to `app`; the chosen one runs from `app`'s callbacks and stores
/// its exit code in `exit_code`.
void add_commands(CLI::App& app, int& exit_code);

/// Adds predict and generate (src/cli/serve_commands.cpp).
void add_serve_commands(CLI::App& app, int& exit_code);

}  // namespace lathe::cli
