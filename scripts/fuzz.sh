#!/usr/bin/env bash
# Builds the libFuzzer target (fuzz/fuzz_attention.cpp) with clang, AddressSanitizer and
# UndefinedBehaviorSanitizer, and runs it from the committed corpus (fuzz/corpus), one worker
# per core (FUZZ_WORKERS to change), each with its own seed.
#   bash scripts/fuzz.sh                 # 60 seconds
#   bash scripts/fuzz.sh 600             # 10 minutes
#   bash scripts/fuzz.sh runs 10000000   # ten million executions in all
# New inputs go to out/fuzz-corpus (not committed); a failing input is written to out/ as
# crash-<sha1> and the script exits non-zero. Reproduce one: ./build-address/fuzz/fuzz_attention FILE
set -euo pipefail
cd "$(dirname "$0")/.."
workers=${FUZZ_WORKERS:-$(nproc)}
if [[ "${1:-}" == runs ]]; then
  total=${2:?number of runs}
  limit=(-runs=$(( (total + workers - 1) / workers )))
else
  limit=(-max_total_time="${1:-60}")
fi
source scripts/sanitizer_build.sh
configure_sanitized address
cmake --build build-address -j "$(nproc)" --target fuzz_attention
mkdir -p out/fuzz-corpus
export ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 OMP_WAIT_POLICY=passive
export LSAN_OPTIONS=suppressions=$PWD/scripts/sanitizers/lsan.supp
start=$SECONDS
pids=()
for w in $(seq 1 "$workers"); do
  ./build-address/fuzz/fuzz_attention "${limit[@]}" -seed="$w" -max_len=8192 -timeout=20 \
    -artifact_prefix=out/ -print_final_stats=1 out/fuzz-corpus fuzz/corpus > "out/fuzz-worker-$w.log" 2>&1 &
  pids+=($!)
done
failed=0
for w in $(seq 1 "$workers"); do
  if ! wait "${pids[$((w - 1))]}"; then
    failed=1
    echo "fuzz worker $w failed; its log (out/fuzz-worker-$w.log) ends:" >&2
    tail -40 "out/fuzz-worker-$w.log" >&2
  fi
done
runs=$(awk '/^stat::number_of_executed_units:/ {n += $2} END {print n + 0}' out/fuzz-worker-*.log)
echo "fuzz: ${runs:-0} executions in $((SECONDS - start)) s by $workers workers;" \
  "$( ((failed)) && echo "FAILED (inputs in out/crash-*)" || echo "no failure")"
exit "$failed"
