#!/usr/bin/env bash
# The layer check: a file may include headers of its own area and of lower layers only.
#   core → config → {data, models, optim, sched, dist} → train → {ckpt, onnx} → run → cli
# Areas: include/lathe/<area>/, src/<area>/ and models/ (the zoo). Exit 1 naming each include
# that reaches up (or sideways into a sibling area of the same layer).
set -euo pipefail
cd "$(dirname "$0")/.."

level() {
  case "$1" in
    core) echo 0 ;;
    config) echo 1 ;;
    data | models | optim | sched | dist) echo 2 ;;
    train) echo 3 ;;
    ckpt | onnx) echo 4 ;;
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
    to=$(area_of "$header")
    [[ -z "$to" || "$to" == "$from" ]] && continue
    to_level=$(level "$to")
    checked=$((checked + 1))
    if [[ -z "$to_level" ]]; then
      echo "check_layers: $file:$line includes \"$header\" of unknown area '$to'"
      status=1
    elif ((to_level >= from_level)); then
      echo "check_layers: $file:$line: $from (layer $from_level) includes \"$header\" of $to" \
        "(layer $to_level); a file may include only lower layers:" \
        "core → config → {data, models, optim, sched, dist} → train → {ckpt, onnx} → run → cli"
      status=1
    fi
  done < <(grep -n -E '^[[:space:]]*#[[:space:]]*include[[:space:]]+"(lathe|models|src)/' "$file" |
    sed -E 's/^([0-9]+):[^"]*"([^"]+)".*/\1:\2/')
done < <(find include/lathe src models -name '*.h' -o -name '*.cpp' | grep -v '^src/pch.h$' | sort)

if ((status == 0)); then
  echo "check_layers: ok ($checked cross-area includes, all downward)"
fi
exit $status
