#!/usr/bin/env bash
# Evaluates the two models of run_interchange.sh with SMYRF at other settings (hashing rounds x
# cluster size), on all 10,000 test images, hash seed 1; writes tools/vit/results/sweep.md.
# Needs the models of a finished run_interchange.sh in $BUILD_DIR/vit-models (a few minutes).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD_DIR:-$root/build-vit}
export OMP_WAIT_POLICY=passive
out=$root/tools/vit/results/sweep.md
tokens=196
{
  echo "Test accuracy (10,000 images, hash seed 1) of the models of run_interchange.sh evaluated"
  echo "with SMYRF at other settings. Memory: n_hashes x balanced cluster / $tokens tokens."
  echo "Produced by tools/vit/sweep_hashes.sh."
  echo
  echo "| hashes | cluster | memory vs dense | trained dense | trained SMYRF (2x32) |"
  echo "|---|---|---|---|---|"
  for cluster in 32 49; do
    for hashes in 1 2 4 8; do
      clusters=$(( (tokens + cluster - 1) / cluster ))
      memory=$(awk -v h="$hashes" -v c="$clusters" -v n="$tokens" 'BEGIN { printf "%.0f%%", 100 * h * (n / c) / n }')
      row="| $hashes | $cluster | $memory |"
      for model in dense smyrf; do
        line=$(nice -n 5 "$build/tools/vit/smyrf-vit" evaluate --threads 2 --attention smyrf \
                 --hashes "$hashes" --cluster "$cluster" --seed 1 \
                 --model "$build/vit-models/model_$model.pt")
        row="$row $(sed -E 's/.*test accuracy ([0-9.]+%).*/\1/' <<< "$line") |"
      done
      echo "$row"
    done
  done
} > "$out"
cat "$out"
