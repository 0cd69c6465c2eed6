// `lathe`: the command-line entry point; maps every lathe::Error to a message and an exit code.
#include <c10/util/Exception.h>

#include "lathe/core/error.h"
#include "lathe/core/log.h"
#include "src/cli/commands.h"

int main(int argc, char** argv) {
  using lathe::cli::Exit;
  CLI::App app{"lathe: train, evaluate and inspect deep-learning models on LibTorch", "lathe"};
  app.require_subcommand(1);
  app.footer(
      "Exit codes: 0 success, 1 the command failed (data, weights, training, i/o), 2 bad "
      "command line or config.\nRun 'lathe <command> --help' for a command's options.");
  int exit_code = Exit::kOk;
  lathe::cli::add_commands(app, exit_code);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? Exit::kOk : Exit::kUsage;
  } catch (const lathe::ConfigError& e) {
    lathe::log::write(lathe::log::Level::error, fmt::format("{}: {}", e.kind(), e.what()));
    return Exit::kUsage;
  } catch (const lathe::Error& e) {
    lathe::log::write(lathe::log::Level::error, fmt::format("{}: {}", e.kind(), e.what()));
    return Exit::kFailure;
  } catch (const c10::Error& e) {
    lathe::log::write(lathe::log::Level::error,
                      fmt::format("torch: {}", e.what_without_backtrace()));
    return Exit::kFailure;
  } catch (const std::exception& e) {
    lathe::log::write(lathe::log::Level::error, e.what());
    return Exit::kFailure;
  }
  return exit_code;
}
