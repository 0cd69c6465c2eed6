#!/usr/bin/env bash
# The layer check (docs/architecture.md): a file may include headers of its own area and of
# lower layers only.
#   core → config → {data, models, optim, sched, dist, onnx} → train → ckpt → run → cli
# Areas: include/lathe/<area>/, src/<area>/ and models/ (the zoo). onnx sits where its includes
# put it: it needs core alone (the exporter takes any module; exporting a run is run's job).
# Two narrower rules: the CLI (src/cli/) includes run and core only, every other area through
# run; tests/, bench/ and examples/ include public headers only (include/lathe/..., models/...),
# never a private src/ header. Every C++ file counts: .h .hpp .cpp .cc .cu. Exit 1 naming each
# include that breaks a rule.
set -euo pipefail
cd "$(dirname "$0")/.."

chain="core → config → {data, models, optim, sched, dist, onnx} → train → ckpt → run → cli"

level() {
  case "$1" in
    core) echo 0 ;;
    config) echo 1 ;;
    data | models | optim | sched | dist | onnx) echo 2 ;;
    train) echo 3 ;;
    ckpt) echo 4 ;;
    run) echo 5 ;;
    cli) echo 6 ;;
    *) echo "" ;;
  esac
}

# The area of a path: include/lathe/<area>/..., src/<area>/..., lathe/<area>/..., models/...
area_of() {
  case "$1" in
    models/*) echo models ;;
    include/lathe/*) echo "$1" | cut -d/ -f3 ;;
    lathe/*) echo "$1" | cut -d/ -f2 ;;
    src/*/*) echo "$1" | cut -d/ -f2 ;;
    *) echo "" ;;
  esac
}

# "LINE:HEADER" for each #include "lathe/...", "models/..." or "src/..." of a file.
includes_of() {
  grep -n -E '^[[:space:]]*#[[:space:]]*include[[:space:]]+"(lathe|models|src)/' "$1" |
    sed -E 's/^([0-9]+):[^"]*"([^"]+)".*/\1:\2/' || true
}

cxx_files() {  # cxx_files DIR...: every C++ source and header under the folders that exist
  local dirs=()
  for d in "$@"; do [[ -d "$d" ]] && dirs+=("$d"); done
  ((${#dirs[@]})) || return 0
  find "${dirs[@]}" -type f \( -name '*.h' -o -name '*.hpp' -o -name '*.cpp' -o -name '*.cc' \
    -o -name '*.cu' \) | sort
}

status=0
checked=0
while IFS= read -r file; do
  from=$(area_of "$file")
  from_level=$(level "$from")
  if [[ -z "$from_level" ]]; then
    echo "check_layers: $file: area '$from' is not in the layer list (scripts/check_layers.sh)"
    status=1
    continue
  fi
  while IFS=: read -r line header; do
    [[ -z "$header" ]] && continue
    to=$(area_of "$header")
    [[ -z "$to" || "$to" == "$from" ]] && continue
    to_level=$(level "$to")
    checked=$((checked + 1))
    if [[ -z "$to_level" ]]; then
      echo "check_layers: $file:$line includes \"$header\" of unknown area '$to'"
      status=1
    elif [[ "$from" == cli && "$to" != run && "$to" != core ]]; then
      echo "check_layers: $file:$line: cli includes \"$header\" of $to; the CLI includes run and" \
        "core only and reaches every other area through run"
      status=1
    elif ((to_level >= from_level)); then
      echo "check_layers: $file:$line: $from (layer $from_level) includes \"$header\" of $to" \
        "(layer $to_level); a file may include only lower layers: $chain"
      status=1
    fi
  done < <(includes_of "$file")
done < <(cxx_files include/lathe src models | grep -v '^src/pch.h$')

# Tests, benchmarks and examples use lathe as its users do: through its public headers.
while IFS= read -r file; do
  while IFS=: read -r line header; do
    [[ -z "$header" ]] && continue
    checked=$((checked + 1))
    if [[ "$header" == src/* ]]; then
      echo "check_layers: $file:$line includes the private header \"$header\"; tests, bench and" \
        "examples include public headers only (include/lathe/..., models/...)"
      status=1
    fi
  done < <(includes_of "$file")
done < <(cxx_files tests bench examples)

if ((status == 0)); then
  echo "check_layers: ok ($checked includes checked: layers downward, cli through run, no private" \
    "header outside the library)"
fi
exit $status
