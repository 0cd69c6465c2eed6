#!/usr/bin/env bash
# Fuzzes each input reader with libFuzzer under ASan + UBSan (preset asan): scripts/fuzz.sh
# [seconds per target, default 600] [target ...] (targets: safetensors pickle idx csv image
# wordpiece config). Each target starts from its seed corpus (tests/fuzz/<target>/) and keeps what
# it learns in build/asan/corpus/<target>/; a crash, leak, timeout or uncaught exception stops it
# and leaves the input as build/asan/artifacts/<target>/crash-* (add a fixed one to the seeds).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-600}"
shift || true
targets=("$@")
((${#targets[@]})) || targets=(safetensors pickle idx csv image wordpiece config)

cmake --preset asan >/dev/null 2>&1 || cmake --preset asan  # quiet unless it fails
cmake --build --preset asan -j 2 --target $(printf 'fuzz_%s ' "${targets[@]}")

export ASAN_OPTIONS="detect_leaks=0:new_delete_type_mismatch=0:allocator_may_return_null=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
status=0
for t in "${targets[@]}"; do
  corpus="build/asan/corpus/$t" artifacts="build/asan/artifacts/$t/" log="build/asan/fuzz-$t.log"
  mkdir -p "$corpus" "$artifacts"
  echo "[fuzz] $t for ${seconds}s (corpus $corpus, seeds tests/fuzz/$t, log $log)"
  # One job, niced: the machine is shared. 2 GB RSS, 10 s per input (a hang is a finding).
  if nice -n 10 "build/asan/tests/fuzz/fuzz_$t" "$corpus" "tests/fuzz/$t" \
      -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -max_len=65536 \
      -artifact_prefix="$artifacts" -print_final_stats=1 >"$log" 2>&1; then
    tail -n 8 "$log"
  else
    status=1
    grep -m1 -A40 -E "ERROR|runtime error|deadly signal|uncaught|timeout|out-of-memory" "$log" ||
      tail -n 60 "$log"
  fi
done
exit $status
