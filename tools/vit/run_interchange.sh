#!/usr/bin/env bash
# The interchange run recorded in tools/vit/results/: trains a dense and a SMYRF ViT on
# Fashion-MNIST and evaluates each with both attentions (about 20-25 minutes on 2 cores).
#   bash tools/vit/run_interchange.sh            (after building smyrf-vit into build-vit/)
# BUILD_DIR overrides the build folder; extra arguments go to `smyrf-vit interchange`.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD_DIR:-$root/build-vit}
results=$root/tools/vit/results
mkdir -p "$results"

# On a machine shared with other jobs, OpenMP worker threads that spin while they wait make
# training up to 10x slower: let them sleep.
export OMP_WAIT_POLICY=passive
command=(nice -n 5 "$build/tools/vit/smyrf-vit" interchange --threads 2
         --train-limit 18000 --epochs 5 --test-limit 0 --hashes 2 --cluster 32 --eval-seeds 3
         --out-dir "$results" --model-dir "$build/vit-models" "$@")
echo "OMP_WAIT_POLICY=passive ${command[*]}" > "$results/command.txt"
"${command[@]}" 2>&1 | tee "$results/interchange.log"
