#!/usr/bin/env bash
# Builds the test suite with clang and a sanitizer, and runs it.
#   bash scripts/sanitize.sh address   # AddressSanitizer + UndefinedBehaviorSanitizer, every test
#   bash scripts/sanitize.sh thread    # ThreadSanitizer (OpenMP through LLVM's Archer tool), the
#                                      # tests that run several threads
# Highway is built for this CPU's target only (-march=native, HWY_COMPILE_ONLY_STATIC) to keep
# the instrumented build short; the per-target tests run in the normal suite.
set -euo pipefail
cd "$(dirname "$0")/.."
kind=${1:?usage: sanitize.sh address|thread}
bash scripts/setup.sh --sanitizers
flags="-O1 -g -fno-omit-frame-pointer -march=native -DHWY_COMPILE_ONLY_STATIC=1"
case $kind in
  address) flags+=" -fsanitize=address,undefined -fno-sanitize-recover=undefined" ;;
  thread) flags+=" -fsanitize=thread" ;;
  *) echo "sanitize.sh: unknown sanitizer '$kind' (address or thread)" >&2; exit 2 ;;
esac
dir=build-$kind
CC=clang CXX=clang++ cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS="$flags" \
  -DSMYRF_BUILD_MODELS=OFF -DSMYRF_BUILD_TORCH=OFF -DSMYRF_BUILD_BENCHMARKS=OFF \
  -DSMYRF_BUILD_TOOLS=OFF > /dev/null
cmake --build "$dir" -j "$(nproc)"
export OMP_WAIT_POLICY=passive
if [[ $kind == address ]]; then
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  export LSAN_OPTIONS=suppressions=$PWD/scripts/sanitizers/lsan.supp
  ctest --test-dir "$dir" --output-on-failure -j "$(nproc)" -E install_and_find_package
else
  archer=$(ls /usr/lib/llvm-*/lib/libarcher.so | head -1)
  export OMP_TOOL_LIBRARIES=$archer TSAN_OPTIONS="halt_on_error=1:ignore_noninstrumented_modules=1"
  ctest --test-dir "$dir" --output-on-failure -j "$(nproc)" \
    -R 'Thread|Parallel|Determin|Bits|Workspace' -E install_and_find_package
fi
