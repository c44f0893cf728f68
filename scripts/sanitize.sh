#!/usr/bin/env bash
# Builds the test suite with clang and a sanitizer, and runs it.
#   bash scripts/sanitize.sh address   # AddressSanitizer + UndefinedBehaviorSanitizer, every test
#   bash scripts/sanitize.sh thread    # ThreadSanitizer (OpenMP through LLVM's Archer tool), the
#                                      # tests that run several threads
# The address build also carries libFuzzer's coverage instrumentation, so scripts/fuzz.sh builds
# its target in the same directory (build-address) without compiling the library again.
# Highway is built for this CPU's target only (-march=native, HWY_COMPILE_ONLY_STATIC) to keep
# the instrumented build short; the per-target tests run in the normal suite.
set -euo pipefail
cd "$(dirname "$0")/.."
kind=${1:?usage: sanitize.sh address|thread}
source scripts/sanitizer_build.sh
configure_sanitized "$kind"
export OMP_WAIT_POLICY=passive
if [[ $kind == address ]]; then
  cmake --build build-address -j "$(nproc)"
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  export LSAN_OPTIONS=suppressions=$PWD/scripts/sanitizers/lsan.supp
  ctest --test-dir build-address --output-on-failure -j "$(nproc)" -E 'install_and_find_package|fuzz'
else
  # Every test that runs several threads or compares bits across thread counts.
  cmake --build build-thread -j "$(nproc)"
  archer=$(ls /usr/lib/llvm-*/lib/libarcher.so | head -1)
  export OMP_TOOL_LIBRARIES=$archer TSAN_OPTIONS="halt_on_error=1:ignore_noninstrumented_modules=1"
  ctest --test-dir build-thread --output-on-failure -j "$(nproc)" -R "Thread|Determinism|Bits" \
    -E install_and_find_package
fi
