#!/usr/bin/env bash
# Regenerates the README's comparison of every attention method at equal attention memory and
# docs/compare.png:
#   1. synthetic: N = 4096, d = 64, clustered inputs (peaked attention) and iid Gaussian ones,
#      every method at budget F = 1/16 (each query sees ~256 keys): time, error vs exact;
#   2. the pretrained model (native regime, 128 tokens), a seeded stratified 1,000 mails, every
#      method at F = 1/4 (~32 keys per query): cosine to the dense embeddings, spam accuracy.
# Methods without a budget (fixed feature maps, the quadratic synthesizers) run at their own
# size. About 15 minutes on 2 cores, most of it the model part. Prints the README's tables
# (scripts/compare_tables.py). Extra arguments go to `smyrf eval` (e.g. --limit 0 for all mails).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
bash scripts/setup.sh --plot
SMYRF=./build/tools/smyrf/smyrf
all_methods() {  # every method's variant at budget $1
  local F=$1
  echo "smyrf:8:$F,smyrf:2:$F,reformer:4:$F,clustered:$F,iclustered:$F,routing:$F,local:$F,dilated:$F"\
",strided:$F,fixed:$F,longformer:$F,bigbird:$F,axial-rows:$F,axial-cols:$F,criss-cross:$F"\
",performer:$F,favor:$F,rfa:$F,linformer:$F,nystrom:$F,mca:$F,isab:$F,star:$F,gmat:$F"\
",informer:$F,sinkhorn:$F,linear,l2,efficient,dpfp:2,synthesizer-dense,synthesizer-random"
}
$SMYRF bench --n 4096 --methods dense --inputs clustered,gaussian --dtypes f32 --repeats 3 \
  --variants "$(all_methods 0.0625)" --json out/compare_synthetic.json --csv out/compare_synthetic.csv
$SMYRF eval --regimes native --limit 1000 \
  --variants "dense,smyrf-c:0.25:24,$(all_methods 0.25)" \
  --json out/compare_model.json --csv out/compare_model.csv "$@"
/usr/bin/python3 scripts/plot_compare.py docs/compare.png out/compare_synthetic.json out/compare_model.json
# The README's two tables.
/usr/bin/python3 scripts/compare_tables.py out/compare_synthetic.json out/compare_model.json \
  | tee out/compare_tables.md
