#!/usr/bin/env bash
# Install what is missing, build, and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
# Two test processes share the cores: OpenMP threads that sleep at barriers instead of
# spinning keep one from starving the other (libgomp reads this before main).
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"
ctest --test-dir build --output-on-failure -j "$(nproc)"
