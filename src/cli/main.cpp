// `lathe`: the command-line entry point; maps every lathe::Error to a message and an exit code,
// and any other exception to one that says what lathe was doing (never a bare library message).
#include <c10/util/Exception.h>
#include <fmt/ranges.h>
#include <yaml-cpp/exceptions.h>

#include <algorithm>
#include <new>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "lathe/core/activity.h"
#include "lathe/core/error.h"
#include "lathe/core/kernel_choice.h"
#include "lathe/core/log.h"
#include "src/cli/commands.h"

namespace {

std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

/// nlohmann's "[json.exception.type_error.306] cannot use value() with array" without the tag.
std::string json_message(const std::string& s) {
  const auto close = s.find("] ");
  return s.rfind("[json.exception.", 0) == 0 && close != std::string::npos ? s.substr(close + 2)
                                                                           : s;
}

/// Reports an exception that is not a lathe::Error with what lathe was doing when it came (the
/// lathe::Doing activities it unwound through, outermost first) and returns the failure code.
int library_error(const std::string& what) {
  std::vector<std::string> doing = lathe::take_failed_activities();
  std::reverse(doing.begin(), doing.end());
  const std::string context =
      doing.empty() ? "while running the command" : fmt::format("while {}", fmt::join(doing, ": "));
  lathe::log::write(lathe::log::Level::error, fmt::format("{}: {}", context, what));
  return lathe::cli::Exit::kFailure;
}

}  // namespace

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
    lathe::kernels::mode();  // a LATHE_KERNELS that is no mode fails here, before any work
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
    return library_error(
        fmt::format("LibTorch refused an operation: {}", first_line(e.what_without_backtrace())));
  } catch (const nlohmann::json::exception& e) {
    return library_error(fmt::format("malformed JSON: {}", json_message(e.what())));
  } catch (const YAML::Exception& e) {
    return library_error(fmt::format("malformed YAML at line {}: {}", e.mark.line + 1, e.msg));
  } catch (const std::bad_alloc&) {
    return library_error(
        "out of memory: the input may declare sizes far larger than it holds, or need more memory "
        "than this machine has");
  } catch (const std::invalid_argument& e) {
    return library_error(fmt::format("a value could not be read ({})", e.what()));
  } catch (const std::out_of_range& e) {
    return library_error(fmt::format("a value is out of range ({})", e.what()));
  } catch (const std::exception& e) {
    return library_error(first_line(e.what()));
  } catch (...) {
    return library_error("an unknown exception");
  }
  return exit_code;
}
