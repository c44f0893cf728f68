#!/usr/bin/env bash
# Builds the libFuzzer target (fuzz/fuzz_attention.cpp) with clang, AddressSanitizer and
# UndefinedBehaviorSanitizer, and runs it on the committed corpus (fuzz/corpus).
#   bash scripts/fuzz.sh                 # 60 seconds
#   bash scripts/fuzz.sh 600             # 10 minutes
#   bash scripts/fuzz.sh runs 10000000   # ten million executions
# New inputs go to out/fuzz-corpus (not committed); a failing input is written to out/ as
# crash-<sha1> and the script exits non-zero. Reproduce one: ./build-address/fuzz/fuzz_attention FILE
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == runs ]]; then limit=(-runs="${2:?number of runs}"); else limit=(-max_total_time="${1:-60}"); fi
source scripts/sanitizer_build.sh
configure_sanitized address
cmake --build build-address -j "$(nproc)" --target fuzz_attention
mkdir -p out/fuzz-corpus
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 OMP_WAIT_POLICY=passive \
  LSAN_OPTIONS=suppressions=$PWD/scripts/sanitizers/lsan.supp \
  ./build-address/fuzz/fuzz_attention "${limit[@]}" -max_len=8192 -timeout=20 \
  -artifact_prefix=out/ -print_final_stats=1 out/fuzz-corpus fuzz/corpus
