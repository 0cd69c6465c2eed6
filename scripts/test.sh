#!/usr/bin/env bash
# The whole test suite: install what is missing, build with tests (the ci preset), run ctest;
# the examples built against an install of that build as outside projects (scripts/examples.sh);
# then the readers under sanitizers (the asan preset).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
scripts/check_layers.sh   # no file includes a header of a higher layer (docs/architecture.md)
cmake --preset ci >/dev/null
cmake --build --preset ci
ctest --preset ci -j 2
scripts/examples.sh build/ci
# The input readers alone under ASan + UBSan (clang): replay the fuzz seed corpora and run the
# hostile-input tests (tests/fuzz/CMakeLists.txt).
cmake --preset asan >/dev/null
cmake --build --preset asan
ctest --preset asan -j 2
