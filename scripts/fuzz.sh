#!/usr/bin/env bash
# Builds the libFuzzer target (fuzz/fuzz_attention.cpp) with clang, AddressSanitizer and
# UndefinedBehaviorSanitizer, and runs it on the committed corpus (fuzz/corpus).
#   bash scripts/fuzz.sh                 # 60 seconds
#   bash scripts/fuzz.sh 600             # 10 minutes
#   bash scripts/fuzz.sh runs 10000000   # ten million executions
# New inputs go to out/fuzz-corpus (not committed); a failing input is written to out/ as
# crash-<sha1> and the script exits non-zero. Reproduce one: ./build-fuzz/fuzz/fuzz_attention FILE
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --sanitizers
if [[ "${1:-}" == runs ]]; then limit=(-runs="${2:?number of runs}"); else limit=(-max_total_time="${1:-60}"); fi
flags="-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined,fuzzer-no-link"
flags+=" -fno-sanitize-recover=undefined -march=native -DHWY_COMPILE_ONLY_STATIC=1"
CC=clang CXX=clang++ cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS="$flags" -DSMYRF_BUILD_FUZZ=ON -DSMYRF_BUILD_TESTS=OFF \
  -DSMYRF_BUILD_BENCHMARKS=OFF -DSMYRF_BUILD_TOOLS=OFF -DSMYRF_BUILD_MODELS=OFF \
  -DSMYRF_BUILD_TORCH=OFF > /dev/null
cmake --build build-fuzz -j "$(nproc)" --target fuzz_attention
mkdir -p out/fuzz-corpus
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 OMP_WAIT_POLICY=passive \
  ./build-fuzz/fuzz/fuzz_attention "${limit[@]}" -max_len=8192 -timeout=20 \
  -artifact_prefix=out/ -print_final_stats=1 out/fuzz-corpus fuzz/corpus
