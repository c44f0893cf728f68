#!/usr/bin/env bash
# The main job: install what is missing, build, and run the default benchmark sweep
# (reference / dense / SMYRF, N = 1024 ... 16384, iid Gaussian and clustered inputs).
# Extra arguments go to `smyrf bench`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
./build/tools/smyrf/smyrf bench "$@"
