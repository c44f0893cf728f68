#!/usr/bin/env bash
# Regenerates docs/bench.png: reference and dense up to N = 32768, SMYRF with 2 and 8 hashes
# and clusters of 32 and 128 up to N = 262144, on iid Gaussian and clustered inputs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
bash scripts/setup.sh --plot
SMYRF=./build/tools/smyrf/smyrf
$SMYRF bench --n 1024,2048,4096,8192,16384,32768 --methods reference,dense --inputs gaussian --dtypes f32 \
  --reference-max-n 2048 --repeats 3 --json out/plot_dense.json --csv ""
for c in 32 128; do
  $SMYRF bench --n 1024,2048,4096,8192,16384,32768,65536,131072,262144 --methods smyrf \
    --n-hashes 2,8 --q-cluster $c --k-cluster $c --inputs gaussian,clustered --dtypes f32 --repeats 3 \
    --no-peak --json out/plot_smyrf$c.json --csv ""
done
/usr/bin/python3 scripts/plot_bench.py docs/bench.png out/plot_dense.json out/plot_smyrf32.json out/plot_smyrf128.json
