// Helpers shared by the data tests: running a Python parity oracle into a temporary folder.
#pragma once

#include <string>

#include "tests/support.h"

namespace lathe::testing {

/// Runs tests/parity/<script> with `dir` as its output folder; fails the test if it fails.
inline void run_oracle(const std::string& script, const TempDir& dir) {
  run_parity(script, dir.path().string());
}

}  // namespace lathe::testing
