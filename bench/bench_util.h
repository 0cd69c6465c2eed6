// Helpers the benchmarks share: running the Python half of a comparison and reading its output.
#pragma once

#include <cstdio>
#include <string>

#include "lathe/core/error.h"

namespace lathe::bench {

/// Runs a shell command and returns its standard output; an Error with that output when the
/// command fails.
inline std::string run_command(const std::string& command) {
  std::string out;
  FILE* pipe = ::popen(command.c_str(), "r");
  LATHE_CHECK(pipe != nullptr, Error, "cannot run {}", command);
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, pipe)) > 0;) out.append(buf, n);
  LATHE_CHECK(::pclose(pipe) == 0, Error, "{} failed:\n{}", command, out);
  return out;
}

}  // namespace lathe::bench
