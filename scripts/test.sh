#!/usr/bin/env bash
# The whole test suite: install what is missing, build with tests (the ci preset), run ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
scripts/check_layers.sh   # no file includes a header of a higher layer (shared/DESIGN.md)
cmake --preset ci >/dev/null
cmake --build --preset ci
ctest --preset ci -j 2
