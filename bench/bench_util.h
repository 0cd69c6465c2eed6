// Helpers the benchmarks share: running the Python half of a comparison and reading its output.
#pragma once

#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "lathe/core/error.h"
#include "lathe/core/kernel_choice.h"

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

/// Where a benchmark ran, one line: "machine: AMD EPYC 9454P (avx2 fma avx512f ...), 2 threads,
/// torch 2.11.0, LATHE_KERNELS=auto".
inline std::string machine_line(int threads) {
  const auto& m = lathe::kernels::machine();
  return fmt::format("machine: {} ({}), {} thread{}, torch {}, LATHE_KERNELS={}", m.cpu, m.flags,
                     threads, threads == 1 ? "" : "s", m.torch,
                     lathe::kernels::mode_name(lathe::kernels::mode()));
}

/// The kernel choices this process has used so far, by kernel and shape class (with threads).
inline std::map<std::string, std::string> used_kernels() {
  std::map<std::string, std::string> out;
  for (const auto& c : lathe::kernels::process_choices())
    out[c.kernel + " (" + c.shape_class + ")"] = std::string(lathe::kernels::side_name(c.side));
  return out;
}

/// The choices in `after` that `before` lacks, as "kernel (class): side" lines.
inline std::vector<std::string> new_kernels(const std::map<std::string, std::string>& before,
                                            const std::map<std::string, std::string>& after) {
  std::vector<std::string> out;
  for (const auto& [what, side] : after)
    if (!before.count(what)) out.push_back(what + ": " + side);
  return out;
}

}  // namespace lathe::bench
