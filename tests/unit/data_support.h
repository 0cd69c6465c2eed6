// Helpers shared by the data tests: running a Python parity oracle into a temporary folder.
#pragma once

#include <string>

#include "tests/support.h"

namespace lathe::testing {

/// Runs tests/parity/<script> with `dir` as its output folder; fails the test if it fails.
inline void run_oracle(const std::string& script, const TempDir& dir) {
  const auto r = run_command(python() + " " + source_dir() + "/tests/parity/" + script + " " +
                             dir.path().string());
  ASSERT_EQ(r.status, 0) << r.output;
}

}  // namespace lathe::testing
