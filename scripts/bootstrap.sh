#!/usr/bin/env bash
# Installs what lathe needs and is missing: Debian 12 packages and the project venv (.venv) with
# the pinned torch (our LibTorch) and the Python test oracles. Idempotent: on a ready machine it
# checks, installs nothing and finishes in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian 12 (bookworm) packages; their versions are fixed by the release. fmt is not among them on
# purpose: lathe uses the fmt 12 headers shipped inside the torch wheel (see cmake/Dependencies.cmake).
# libgloo-dev gives the gloo/*.h headers that torch's ProcessGroupGloo.hpp needs (README).
# clang and libclang-rt-14-dev (ASan, UBSan, libFuzzer runtimes) build the asan preset.
# libcurl talks to an MLflow tracking server; chromium (headless) checks the HTML run report in tests.
# libxgboost-dev (1.7.4, matched by the venv's xgboost==1.7.4 oracle) and libsvm-dev (LIBSVM 3.24)
# fit the xgboost, random_forest and svm models.
DEB_PACKAGES=(
  cmake ninja-build ccache g++ pkg-config git
  clang libclang-rt-14-dev
  libprotobuf-dev protobuf-compiler libonnx-dev
  libgtest-dev libyaml-cpp-dev nlohmann-json3-dev libcli11-dev
  libturbojpeg0-dev libjpeg62-turbo-dev libpng-dev libicu-dev zlib1g-dev
  libgloo-dev
  libcurl4-openssl-dev chromium
  libxgboost-dev libsvm-dev
  dataset-fashion-mnist fortunes
  python3 python3-venv
)

missing=()
for p in "${DEB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "[bootstrap] installing Debian packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "[bootstrap] Debian packages: all present"
fi

# The CUDA toolkit is needed to configure against the CUDA build of torch (nvcc, no GPU).
if [ ! -x /usr/local/cuda/bin/nvcc ]; then
  echo "[bootstrap] warning: /usr/local/cuda/bin/nvcc not found; torch's CMake config needs the" \
       "CUDA 13 toolkit there (or pass -DCMAKE_CUDA_COMPILER=...)" >&2
fi

# The project venv: rebuilt only when scripts/requirements.txt changed since the last install.
stamp=.venv/.lathe-requirements.sha256
want=$(sha256sum scripts/requirements.txt | cut -d' ' -f1)
if [ -x .venv/bin/python ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "[bootstrap] .venv: up to date with scripts/requirements.txt"
else
  echo "[bootstrap] .venv: installing scripts/requirements.txt (torch is large: a few minutes)"
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/python -m pip install -q --disable-pip-version-check -r scripts/requirements.txt
  echo "$want" > "$stamp"
fi

# The CSV recipes' data (wine, diabetes) from scikit-learn's bundled copies.
.venv/bin/python scripts/make_datasets.py datasets
