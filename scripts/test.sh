#!/usr/bin/env bash
# The whole test suite: install what is missing, build with tests (the ci preset), run ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
cmake --preset ci >/dev/null
cmake --build --preset ci
ctest --preset ci -j 2
