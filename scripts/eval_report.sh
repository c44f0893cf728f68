#!/usr/bin/env bash
# Regenerates the README's pretrained-model figures: every SpamAssassin mail in the native
# regime (the model's 128-token clip) with the classifier's lambda also chosen by 5-fold CV,
# a seeded stratified 600 of them in the extended regime (clip lifted to 2048 tokens), every
# variant tried, and docs/eval.png. About 25 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
bash scripts/setup.sh --plot
SMYRF=./build/tools/smyrf/smyrf
VARIANTS=dense,smyrf:2:0.5,smyrf:2:0.25,smyrf:1:0.125,smyrf:4:0.5,smyrf:1:0.5,smyrf:2x32
VARIANTS+=,smyrf-c:0.5,smyrf-c:0.5:4,smyrf-c:0.5:8,smyrf-c:0.5:12,smyrf-c:0.5:24,smyrf-c:0.5:32,smyrf-c:0.25,smyrf-c:0.25:24,smyrf-c:0.25:32,smyrf-c:0.125:24,smyrf-c:0.125:32,smyrf-c:0.125:64
$SMYRF eval --limit 0 --regimes native --cv --variants "$VARIANTS" \
  --json out/eval_native.json --csv out/eval_native.csv "$@"
$SMYRF eval --limit 0 --extended-limit 600 --regimes extended \
  --variants dense,smyrf:2:0.5,smyrf:2:0.25,smyrf:1:0.125,smyrf-c:0.5,smyrf-c:0.25,smyrf-c:0.125:32,smyrf-c:0.5:24,smyrf-c:0.25:24,smyrf-c:0.125:24 \
  --json out/eval_extended.json --csv out/eval_extended.csv "$@"
/usr/bin/python3 scripts/plot_eval.py docs/eval.png out/eval_native.json out/eval_extended.json
